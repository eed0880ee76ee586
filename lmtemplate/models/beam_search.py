"""Greedy decoding (or sampling) and batched beam search over a ``step`` function (``Seq2Seq.stepper``,
``decoder_stepper`` for a GPT continuing a prompt).

Both start every hypothesis with BOS and end it at EOS, or at the row's
``max_lengths`` (tokens generated, EOS included), where EOS is forced (at no cost
to a beam's score, as ``generate``'s ``forced_eos_token_id``). They
return the generated ids without BOS and EOS. ``Rules`` forbid, before the
limit, EOS before ``min_length`` other tokens and any token that would repeat an
n-gram of ``no_repeat_ngram_size`` tokens already in the hypothesis (BOS counts,
as in Hugging Face's ``generate``); the defaults forbid nothing. A ``repetition_penalty``
p > 1 makes every token already in the hypothesis (BOS included) less likely, as
``generate``'s does: its score is multiplied by p where negative, divided by p where
positive (raw logits in greedy decoding and sampling, log-probabilities in beam search).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lmtemplate.models.gpt import GPT
from lmtemplate.models.seq2seq import Step


@dataclass(frozen=True)
class Rules:
    """What decoding may not generate (0: no rule)."""

    min_length: int = 0  # at least this many tokens before EOS, unless the row's limit comes first
    no_repeat_ngram_size: int = 0  # no n-gram of this many tokens twice in a hypothesis
    repetition_penalty: float = 1.0  # > 1: tokens already in the hypothesis are penalised (1: no penalty)

    def apply(self, logp: torch.Tensor, tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
        """``logp`` (N, vocab) for the next token of ``tokens`` (N, t), repeated tokens penalised and what the rules
        forbid at -inf."""
        if self.repetition_penalty != 1.0:
            seen = logp.gather(1, tokens)
            logp = logp.scatter(1, tokens, torch.where(seen < 0, seen * self.repetition_penalty,
                                                       seen / self.repetition_penalty))
        if tokens.size(1) <= self.min_length:  # tokens: BOS and those generated so far
            logp = logp.index_fill(1, torch.tensor([eos_id], device=logp.device), float("-inf"))
        n = self.no_repeat_ngram_size
        if n and tokens.size(1) >= n - 1:
            banned = [(row, token) for row, history in enumerate(tokens.tolist()) for token in _repeats(history, n)]
            if banned:
                rows, columns = torch.tensor(banned, device=logp.device).T
                logp = logp.index_put((rows, columns), torch.tensor(float("-inf"), device=logp.device))
        return logp


def _repeats(history: list[int], n: int) -> set[int]:
    """The tokens that would end an n-gram already in ``history``: those that followed its last n - 1 tokens."""
    prefix = tuple(history[len(history) - n + 1:]) if n > 1 else ()
    return {history[i + n - 1] for i in range(len(history) - n + 1) if tuple(history[i: i + n - 1]) == prefix}


def decoder_stepper(model: GPT, prompt: torch.Tensor, copies: int = 1) -> Step:
    """``Seq2Seq.stepper`` for a GPT continuing ``prompt`` (B, T), prompts of one length (no padding): the KV
    caches are filled with the prompt once, then each step feeds the newest token (the first: the token that
    ends the prompt, given as BOS) and follows ``parents`` as beam search reorders its hypotheses."""
    prompt = prompt.repeat_interleave(copies, 0)
    caches = model.new_caches(len(prompt))
    if prompt.size(1):
        model.features(prompt, caches)

    def step(tokens, parents=None):
        for cache in caches if parents is not None else ():
            cache.reorder(parents)
        return model(tokens, caches, start_pos=caches[0].length)[:, -1]

    return step


def _strip(row: list[int], eos_id: int) -> list[int]:
    """The ids after BOS up to the first EOS."""
    row = row[1:]
    return row[: row.index(eos_id)] if eos_id in row else row


@torch.no_grad()
def greedy(step: Step, bos_id: int, eos_id: int, max_lengths: torch.Tensor, rules: Rules = Rules(),
           choose: Callable[[torch.Tensor], torch.Tensor] = lambda logits: logits.argmax(-1)) -> list[list[int]]:
    """The most likely next token at each step (or the one ``choose`` picks from the logits (N, vocab), a
    sample, say), for each row of ``step``; stops once every row has ended."""
    tokens = torch.full((len(max_lengths), 1), bos_id, dtype=torch.long, device=max_lengths.device)
    done = torch.zeros(len(max_lengths), dtype=torch.bool, device=max_lengths.device)
    for t in range(1, int(max_lengths.max()) + 1):
        nxt = choose(rules.apply(step(tokens[:, -1:], None).float(), tokens, eos_id))
        nxt = nxt.masked_fill(done | (t >= max_lengths), eos_id)
        done |= nxt == eos_id
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        if done.all():
            break
    return [_strip(row, eos_id) for row in tokens.tolist()]


@torch.no_grad()
def beam_search(step: Step, bos_id: int, eos_id: int, max_lengths: torch.Tensor, beam_size: int,
                length_penalty: float = 1.0, rules: Rules = Rules()) -> tuple[list[list[int]], list[float]]:
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
        # EOS at the limit, whatever the rules say, at no cost (as generate's forced_eos_token_id)
        logp = torch.where(((t >= limit) | ended.view(-1))[:, None], only_eos, rules.apply(logp, tokens, eos_id))
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
