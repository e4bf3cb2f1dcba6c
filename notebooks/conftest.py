import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # header.py, for the header test
