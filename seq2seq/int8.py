"""int8 decoding on a CPU (precision int8, translation only).

The decoder's recurrent layer, the attention's projections and the combination and output
layers keep their weights in int8, one scale per output row, and quantize their inputs one
row at a time as the rows come (dynamic quantization: scale = the row's largest |x| / 127).
The products run in int32 through `torch._int_mm`, oneDNN's int8 matrix product (AMX or
AVX512-VNNI where the CPU has them, AVX2 otherwise), and are scaled back to float32. The
encoder, which runs once per sentence where the decoder runs once per beam and step, and the
embeddings stay in float32.

Why this path: torch's eager quantization (`torch.ao.quantization.quantize_dynamic` and its
quantized tensors) is deprecated from torch 2.13 on and warns; `torch._int_mm` is a plain
tensor op, the one torchao's int8 dynamic quantization calls, so nothing here depends on the
deprecated API, and a model is quantized from its float weights when it is loaded (a
checkpoint stays float).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from .model import Decoder


class Int8Linear(nn.Module):
    """A linear layer with int8 weights: (..., K) -> (..., N) in float32."""

    def __init__(self, weight: Tensor, bias: Tensor | None):
        super().__init__()
        weight = weight.detach().float()  # (N, K)
        self.scale = weight.abs().amax(dim=1).clamp_min(1e-12) / 127  # (N,): one per row
        weight = torch.round(weight / self.scale[:, None]).to(torch.int8)
        self.weight = weight.t().contiguous()  # (K, N), as torch._int_mm takes it
        self.bias = None if bias is None else bias.detach().float()

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, x.size(-1)).float()  # (M, K)
        step = rows.abs().amax(dim=1, keepdim=True).clamp_min_(1e-12).div_(127)  # (M, 1)
        q = rows.div(step).round_().to(torch.int8)
        out = torch._int_mm(q, self.weight).float().mul_(step).mul_(self.scale)  # (M, N)
        if self.bias is not None:
            out.add_(self.bias)
        return out.view(*x.shape[:-1], -1)


class Int8RNN(nn.Module):
    """A stack of RNN, GRU or LSTM layers (time-major, unidirectional) with int8 weights:
    x (T, B, F), hidden (L, B, H) or (h, c) -> output (T, B, H), final hidden; the gates
    as torch.nn.GRU / LSTM / RNN (tanh) compute them. (A decoder always has a first state.)"""

    def __init__(self, rnn: nn.RNNBase):
        super().__init__()
        self.mode = rnn.mode

        def part(name: str) -> Int8Linear:  # ih_l<k>: layer k's input part, hh_l<k>: hidden
            return Int8Linear(getattr(rnn, f"weight_{name}"), getattr(rnn, f"bias_{name}"))

        self.pairs = [(part(f"ih_l{k}"), part(f"hh_l{k}")) for k in range(rnn.num_layers)]

    def forward(self, x: Tensor, hidden):
        lstm = self.mode == "LSTM"
        h_all, c_all = (hidden[0].float(), hidden[1].float()) if lstm else (hidden.float(), None)
        finals = []  # (h, c) of each layer
        for k, (ih, hh) in enumerate(self.pairs):
            inputs = ih(x)  # (T, B, gates * H): the input's part of every step at once
            h, c, outputs = h_all[k], None if c_all is None else c_all[k], []
            for gi in inputs:
                h, c = self._cell(gi, hh(h), h, c)
                outputs.append(h)
            x = torch.stack(outputs)
            finals.append((h, c))
        final = torch.stack([h for h, _ in finals])
        return x, ((final, torch.stack([c for _, c in finals])) if lstm else final)

    def _cell(self, gi: Tensor, gh: Tensor, h: Tensor, c: Tensor | None):
        """One step's gates from the input part gi and the hidden part gh, (B, gates * H)."""
        if self.mode == "GRU":
            ir, iz, in_ = gi.chunk(3, dim=1)
            hr, hz, hn = gh.chunk(3, dim=1)
            r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
            n = torch.tanh(in_ + r * hn)
            return n + z * (h - n), None  # (1 - z) n + z h
        if self.mode == "LSTM":
            i, f, g, o = (gi + gh).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(c), c
        return torch.tanh(gi + gh), None


def quantize(model: nn.Module) -> nn.Module:
    """A copy of `model` (a Seq2Seq, or an ensemble of them) for int8 decoding: every
    decoder's linear layers and recurrent layer in int8, the rest as it was."""
    model = copy.deepcopy(model).float()
    for decoder in [m for m in model.modules() if isinstance(m, Decoder)]:
        for parent in list(decoder.modules()):
            for name, child in parent.named_children():
                if isinstance(child, nn.Linear) and child.out_features >= 8:  # not a score
                    setattr(parent, name, Int8Linear(child.weight, child.bias))
        decoder.rnn = Int8RNN(decoder.rnn)
    return model
