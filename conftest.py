import pathlib
import sys

# Everything is importable from the repo root (no install of the project required).
sys.path.insert(0, str(pathlib.Path(__file__).parent))
