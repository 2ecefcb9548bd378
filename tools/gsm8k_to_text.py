#!/usr/bin/env python3
"""gsm8k_to_text.py: the fine-tuning corpus of configs/lora_tiny.yaml (dev-only: its output,
data/gsm8k_train.txt, is committed; nothing runs this at build, test or training time).

Reads GSM8K's train.jsonl (Cobbe et al. 2021, openai/grade-school-math, MIT licence) and
writes the first N problems as plain text, each as "question\\nanswer\\n\\n" (the answer keeps
its <<a*b=c>> calculator annotations and the final "#### number" line).

    python3 tools/gsm8k_to_text.py PATH/TO/train.jsonl 1000 > data/gsm8k_train.txt
"""
import json
import sys


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    path, count = sys.argv[1], int(sys.argv[2])
    out = sys.stdout
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i == count:
                break
            ex = json.loads(line)
            out.write(ex["question"].strip() + "\n" + ex["answer"].strip() + "\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
