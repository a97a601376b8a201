import pathlib
import sys

# Everything is importable from the repo root (no install of the project required).
sys.path.insert(0, str(pathlib.Path(__file__).parent))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: fault-injection and multi-process tests (CI runs them too)")
