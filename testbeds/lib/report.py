#!/usr/bin/env python3
"""Moved to testbeds/sostest/report.py; this shim keeps `python3 testbeds/lib/report.py ...` working."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sostest.report import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv)
