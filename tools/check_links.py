"""Checks that every relative link in README.md and docs/*.md resolves.

    python tools/check_links.py     # one line per broken link, exit status 1 if any

A link resolves when its file exists and, for `file.md#anchor`, a heading of that
file slugs to the anchor (GitHub's rule: lower case, punctuation dropped, spaces
to hyphens). Links inside fenced code blocks and absolute URLs are skipped.
"""

import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def anchors(path: str) -> set[str]:
  """The anchors GitHub gives the headings of a markdown file."""
  out = set()
  for line in open(path):
    heading = re.match(r'#+\s+(.*)', line)
    if heading:
      out.add(re.sub(r'[^\w\- ]', '', heading.group(1).strip().lower()).replace(' ', '-'))
  return out


def broken_links(root: str) -> tuple[int, list[str]]:
  """(links checked, one line per link that does not resolve)."""
  files = [os.path.join(root, 'README.md')] + sorted(glob.glob(os.path.join(root, 'docs', '*.md')))
  checked, bad = 0, []
  for f in files:
    text = re.sub(r'```.*?```', '', open(f).read(), flags=re.S)
    for target in re.findall(r'\]\(([^)\s]+)\)', text):
      if re.match(r'[a-z]+:', target):
        continue
      checked += 1
      path, _, anchor = target.partition('#')
      dest = os.path.normpath(os.path.join(os.path.dirname(f), path)) if path else f
      where = os.path.relpath(f, root)
      if not os.path.exists(dest):
        bad.append(f'{where}: {target}: no such file')
      elif anchor and dest.endswith('.md') and anchor not in anchors(dest):
        bad.append(f'{where}: {target}: no heading with that anchor')
  return checked, bad


if __name__ == '__main__':
  n, problems = broken_links(ROOT)
  print('\n'.join(problems) or f'all {n} relative links resolve')
  sys.exit(1 if problems else 0)
