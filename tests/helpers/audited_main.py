"""`python -m experiments.main ARGS` with a record of every write under
the workdir: the list goes to $AUDIT_OUT (outside the workdir) at exit.
The two-process test runs process 1 this way: it must write nothing."""
import atexit
import json
import os
import pathlib
import runpy
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKDIR = next(a.split('=', 1)[1] for a in sys.argv[1:]
               if a.startswith('--workdir='))
WATCHED = os.path.abspath(WORKDIR)
WRITES = []
# Audit events that change the file system (Python-level; orbax's
# tensorstore writes in C++ are outside them).
CHANGES = {'os.rename', 'os.remove', 'os.rmdir', 'os.mkdir', 'shutil.rmtree',
           'os.truncate', 'os.chmod', 'shutil.move', 'os.symlink',
           'os.link'}


def _under(path) -> bool:
  # Cheap (the hook sees every import's opens): the workdir is given
  # absolute, so an absolute path names it by prefix.
  try:
    path = os.path.abspath(os.fsdecode(path))
  except (TypeError, ValueError):
    return False
  return path == WATCHED or path.startswith(WATCHED + os.sep)


def _hook(event, args):
  if event == 'open':
    path, mode, flags = args
    writing = (isinstance(mode, str) and any(c in mode for c in 'wax+')) or (
        isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR |
                                            os.O_CREAT))
    if writing and path is not None and not isinstance(path, int) and (
        _under(path)):
      WRITES.append([event, os.fsdecode(path)])
  elif event in CHANGES and args and _under(args[0]):
    WRITES.append([event, os.fsdecode(args[0])])


def _dump():
  with open(os.environ['AUDIT_OUT'], 'w') as f:
    json.dump(WRITES, f)


sys.path.insert(0, str(ROOT))
atexit.register(_dump)
sys.addaudithook(_hook)
sys.argv = [str(ROOT / 'experiments/main.py')] + sys.argv[1:]
runpy.run_module('experiments.main', run_name='__main__', alter_sys=True)
