"""Greedy decoding and batched beam search over a ``step`` function (``Seq2Seq.stepper``).

Both start every hypothesis with BOS and end it at EOS, or at the row's
``max_lengths`` (tokens generated, EOS included), where EOS is forced. They
return the generated ids without BOS and EOS.
"""

from __future__ import annotations

import torch

from lmtemplate.models.seq2seq import Step


def _strip(row: list[int], eos_id: int) -> list[int]:
    """The ids after BOS up to the first EOS."""
    row = row[1:]
    return row[: row.index(eos_id)] if eos_id in row else row


@torch.no_grad()
def greedy(step: Step, bos_id: int, eos_id: int, max_lengths: torch.Tensor) -> list[list[int]]:
    """The most likely next token at each step, for each row of ``step``; stops once every row has ended."""
    tokens = torch.full((len(max_lengths), 1), bos_id, dtype=torch.long, device=max_lengths.device)
    done = torch.zeros(len(max_lengths), dtype=torch.bool, device=max_lengths.device)
    for t in range(1, int(max_lengths.max()) + 1):
        nxt = step(tokens[:, -1:], None).argmax(-1)
        nxt = nxt.masked_fill(done | (t >= max_lengths), eos_id)
        done |= nxt == eos_id
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        if done.all():
            break
    return [_strip(row, eos_id) for row in tokens.tolist()]


@torch.no_grad()
def beam_search(step: Step, bos_id: int, eos_id: int, max_lengths: torch.Tensor, beam_size: int,
                length_penalty: float = 1.0) -> tuple[list[list[int]], list[float]]:
    """The best of ``beam_size`` hypotheses per source, and its score; ``step`` has ``beam_size`` rows per source.

    Each step keeps, per source, the ``beam_size`` highest summed log-probabilities
    among all one-token extensions of its hypotheses. An ended hypothesis stays in
    the beam, competing with its unchanged score, and is never extended (its only
    continuation is padding at no cost). The search stops when every hypothesis has
    ended; the answer is the one with the best log-probability / length ** length_penalty
    (length counts EOS; 0: no normalisation, larger values favour longer outputs).
    """
    B, K = len(max_lengths), beam_size
    device = max_lengths.device
    tokens = torch.full((B * K, 1), bos_id, dtype=torch.long, device=device)
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0  # the K rows of a source start identical: extend only the first
    ended = torch.zeros(B, K, dtype=torch.bool, device=device)
    lengths = torch.zeros(B, K, device=device)
    limit = max_lengths.repeat_interleave(K)
    parents = None
    for t in range(1, int(max_lengths.max()) + 1):
        logp = step(tokens[:, -1:], parents).float().log_softmax(-1)
        V = logp.size(-1)
        only_eos = torch.full_like(logp, float("-inf"))
        only_eos[:, eos_id] = 0.0
        logp = torch.where((t >= limit)[:, None], logp.clamp(max=0.0) + only_eos, logp)  # forced EOS at the limit
        logp = torch.where(ended.view(-1, 1), only_eos, logp)
        top, flat = (scores.view(-1, 1) + logp).view(B, K * V).topk(K, dim=1)
        beam, token = flat // V, flat % V
        parents = (beam + torch.arange(B, device=device)[:, None] * K).view(-1)
        was_ended = ended.gather(1, beam)
        lengths = lengths.gather(1, beam) + (~was_ended).float()
        ended, scores = was_ended | (token == eos_id) | top.isneginf(), top  # -inf: fewer hypotheses than beams
        tokens = torch.cat([tokens[parents], token.view(-1, 1)], dim=1)
        if ended.all():
            break
    normalised = scores / lengths.clamp(min=1) ** length_penalty
    best = normalised.argmax(dim=1)
    rows = tokens[best + torch.arange(B, device=device) * K].tolist()
    return [_strip(row, eos_id) for row in rows], normalised.gather(1, best[:, None])[:, 0].tolist()
