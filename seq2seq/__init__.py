"""seq2seq: recurrent neural machine translation with attention (the library floor).

Imports torch and sentencepiece only; knows nothing of run folders, `datasets` or the CLI.
"""

__version__ = "0.1.0"
