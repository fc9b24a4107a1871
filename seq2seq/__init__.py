"""seq2seq: recurrent neural machine translation with attention (the library floor).

Imports torch, sentencepiece, safetensors and yaml only; knows nothing of run folders,
`datasets`, sacreBLEU or the CLI.
"""

__version__ = "0.1.0"
