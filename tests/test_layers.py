"""The import contract of pyproject.toml ([tool.importlinter]): layers point
one way, configs are read only by the command-line layer. import-linter
does the checking (imports inside functions count); this test runs it and
fails with its report."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_contracts_are_kept():
  lint = os.path.join(os.path.dirname(sys.executable), 'lint-imports')
  run = subprocess.run([lint, '--no-cache', '--config', os.path.join(REPO, 'pyproject.toml')],
                       cwd=REPO, capture_output=True, text=True, check=False,
                       env=dict(os.environ, PYTHONPATH=REPO))
  assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
  assert 'broken' in run.stdout and ' 0 broken' in run.stdout, run.stdout[-2000:]
