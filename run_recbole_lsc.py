"""Run a RecBole or recbole-lsc model: python run_recbole_lsc.py --model=SASRec --dataset=ml-100k"""

import sys

from recbole_lsc.cli import main

if __name__ == "__main__":
    sys.exit(main())
