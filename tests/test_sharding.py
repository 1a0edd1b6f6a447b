"""The client axis sharded over 8 fake CPU devices (the checks live in `sharded_checks.py`).

The device count of the CPU backend is fixed when JAX starts, so the checks
run in a fresh process with XLA_FLAGS=--xla_force_host_platform_device_count=8;
the rest of the suite keeps its single device.
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow  # a fresh 8-device process (about 40 s); `.ci/run` runs it
def test_sharded_checks_on_8_fake_devices():
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=8')
  command = [sys.executable, '-m', 'pytest', '-q', '-n', '0', '-rs', 'tests/sharded_checks.py']
  out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  report = out.stdout[-6000:] + out.stderr[-2000:]
  assert out.returncode == 0, report
  assert 'skipped' not in out.stdout and ' passed' in out.stdout, report
