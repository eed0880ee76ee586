"""The encoder-decoder and its decoding: caches, padding, embeddings, greedy and beam search, their rules (minimum
length, no repeated n-gram), and a GPT continuing prompts through the same search."""

import math

import pytest
import torch

from lmtemplate.models.beam_search import Rules, beam_search, decoder_stepper, greedy
from lmtemplate.models.gpt import GPT, GPTConfig
from lmtemplate.models.seq2seq import Seq2Seq, Seq2SeqConfig

VOCAB, BOS, EOS = 30, 1, 2


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**overrides) -> Seq2Seq:
    torch.manual_seed(0)
    cfg = dict(vocab_size=VOCAB, block_size=24, n_layer=2, n_decoder_layer=1, n_head=2, n_embd=16)
    return Seq2Seq(Seq2SeqConfig(**{**cfg, **overrides})).eval()


def sources(lengths=(5, 9, 3), width=9, seed=1):
    """Random source ids right-padded with 0 to ``width``, and their mask."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, VOCAB, (len(lengths), width), generator=g)
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    return src.masked_fill(mask == 0, 0), mask


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_cached_decoding_equals_full_recomputation(positions):
    """Step by step, with hypotheses reordered as beam search does: the KV caches must follow the reordering."""
    model = tiny(positions=positions)
    src, mask = sources()
    cached, full = model.stepper(src, mask, copies=3), model.stepper(src, mask, copies=3, use_cache=False)
    g = torch.Generator().manual_seed(2)
    tokens, parents = torch.full((9, 1), BOS), None
    for _ in range(8):
        a, b = cached(tokens, parents), full(tokens, parents)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        # each row continues a random row of the same source, as in a beam
        parents = torch.randint(3, (9,), generator=g) + torch.arange(9) // 3 * 3
        tokens = torch.randint(3, VOCAB, (9, 1), generator=g)


def test_teacher_forced_logits_equal_incremental_ones():
    model = tiny()
    src, mask = sources()
    tgt = torch.randint(3, VOCAB, (3, 7), generator=torch.Generator().manual_seed(3))
    full = model(src, mask, tgt)
    step = model.stepper(src, mask)
    for t in range(tgt.size(1)):
        torch.testing.assert_close(step(tgt[:, t: t + 1], None), full[:, t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_source_padding_is_invisible(positions):
    """Longer padding with other pad ids changes nothing: the encoder and the cross-attention skip it."""
    model = tiny(positions=positions)
    src, mask = sources(width=9)
    wider = torch.cat([src, torch.full((3, 4), 7)], dim=1)
    wider_mask = torch.cat([mask, torch.zeros(3, 4, dtype=torch.long)], dim=1)
    wider[:, :9][mask == 0] = 11
    tgt = torch.randint(3, VOCAB, (3, 5), generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(model(src, mask, tgt), model(wider, wider_mask, tgt), atol=1e-5, rtol=1e-5)
    changed = src.clone()
    changed[0, 0] = (changed[0, 0] + 1) % VOCAB
    assert not torch.allclose(model(src, mask, tgt)[0], model(changed, mask, tgt)[0])


def test_embeddings_shared_or_separate_and_tied_or_not():
    shared = tiny()
    assert shared.encoder.tok_emb is shared.decoder.tok_emb
    assert shared.decoder.lm_head.weight is shared.decoder.tok_emb.weight
    separate = tiny(shared_embeddings=False, src_vocab_size=50, tie_output=False)
    assert separate.encoder.tok_emb.num_embeddings == 50 and separate.decoder.tok_emb.num_embeddings == VOCAB
    assert separate.decoder.lm_head.weight is not separate.decoder.tok_emb.weight
    assert len(separate.decoder.blocks) == 1 and len(separate.encoder.blocks) == 2
    src = torch.randint(30, 50, (2, 6))  # ids the target vocabulary does not have
    assert separate(src, torch.ones_like(src), torch.full((2, 3), BOS)).shape == (2, 3, VOCAB)
    n_shared = sum(p.numel() for p in shared.parameters())
    n_untied = sum(p.numel() for p in tiny(tie_output=False).parameters())
    assert n_untied - n_shared == VOCAB * 16
    with pytest.raises(ValueError, match="model.src_vocab_size"):
        tiny(shared_embeddings=False)


def test_beam_size_one_equals_greedy():
    model = tiny()
    src, mask = sources(lengths=(5, 9, 3, 7), width=9, seed=5)
    limits = torch.tensor([12, 6, 9, 20])
    greedy_ids = greedy(model.stepper(src, mask), BOS, EOS, limits)
    beam_ids, _ = beam_search(model.stepper(src, mask), BOS, EOS, limits, beam_size=1, length_penalty=0.7)
    assert beam_ids == greedy_ids
    assert [len(ids) for ids in greedy_ids] != [0] * 4  # an untrained model does not stop at once
    assert all(len(ids) <= limit for ids, limit in zip(greedy_ids, limits.tolist()))


def test_beam_search_with_the_cache_equals_without():
    model = tiny()
    src, mask = sources()
    limits = torch.tensor([10, 15, 8])
    a = beam_search(model.stepper(src, mask, copies=4), BOS, EOS, limits, beam_size=4)
    b = beam_search(model.stepper(src, mask, copies=4, use_cache=False), BOS, EOS, limits, beam_size=4)
    assert a[0] == b[0] and a[1] == pytest.approx(b[1], abs=1e-5)


# Hand-made models: next-token probabilities by the tokens generated so far.
A, B = 3, 4


def table_step(table: dict, rows: int, calls: list):
    """A step function over ``table`` (prefix -> {token: p}); after EOS it offers A for free, which a search
    that extended ended hypotheses would take. Appends to ``calls`` the hypotheses it was fed with a token
    other than EOS after an EOS (an extended ended hypothesis), one list per call."""
    history = [[] for _ in range(rows)]

    def step(tokens, parents):
        nonlocal history
        if parents is not None:
            history = [list(history[p]) for p in parents.tolist()]
        history = [h + [t] for h, t in zip(history, tokens[:, 0].tolist())]
        calls.append([h for h in history if EOS in h[1:] and set(h[h.index(EOS, 1):]) != {EOS}])
        logits = torch.full((rows, 5), -1e9)
        for row, h in enumerate(history):
            probs = {A: 1.0} if EOS in h[1:] else table.get(tuple(h[1:]), {EOS: 1.0})
            for token, p in probs.items():
                logits[row, token] = math.log(p)
        return logits

    return step


TABLE = {(): {EOS: 0.5, A: 0.5}, (A,): {A: 0.9, EOS: 0.1}, (A, A): {A: 0.9, EOS: 0.1}, (A, A, A): {EOS: 1.0}}


def test_length_penalty_changes_the_choice_and_ended_beams_are_never_extended():
    """With two beams, [EOS] (p 0.5, 1 token) ends at once and stays in the beam while [A A A EOS]
    (p 0.405, 4 tokens) grows beside it. Raw log-probability prefers the short one, log-probability per
    token (length_penalty 1) the long one. The ended [EOS] is offered a free A at every step: it must
    neither take it nor be fed anything but EOS again."""
    calls = []
    ids, scores = beam_search(table_step(TABLE, 2, calls), BOS, EOS, torch.tensor([10]), beam_size=2, length_penalty=0.0)
    assert ids == [[]] and scores[0] == pytest.approx(math.log(0.5))
    assert len(calls) == 4  # every beam has ended after four steps: the search stops there, not at 10
    assert calls == [[]] * 4  # no hypothesis was fed a token after its EOS but EOS
    calls = []
    ids, scores = beam_search(table_step(TABLE, 2, calls), BOS, EOS, torch.tensor([10]), beam_size=2, length_penalty=1.0)
    assert ids == [[A, A, A]] and scores[0] == pytest.approx(math.log(0.405) / 4)
    assert calls == [[]] * 4


def test_beam_search_finds_what_greedy_misses_and_respects_the_length_limit():
    table = {(): {A: 0.6, B: 0.4}, (A,): {EOS: 0.55, A: 0.45}, (A, A): {EOS: 1.0}, (B,): {EOS: 1.0}}
    assert greedy(table_step(table, 1, []), BOS, EOS, torch.tensor([10])) == [[A]]  # p 0.33
    ids, _ = beam_search(table_step(table, 3, []), BOS, EOS, torch.tensor([10]), beam_size=3, length_penalty=0.0)
    assert ids == [[B]]  # p 0.4
    long = {(): {A: 1.0}, (A,): {A: 1.0}, (A, A): {A: 1.0}}
    assert greedy(table_step(long, 1, []), BOS, EOS, torch.tensor([3])) == [[A, A]]  # EOS forced as the 3rd token
    ids, _ = beam_search(table_step(long, 2, []), BOS, EOS, torch.tensor([3]), beam_size=2)
    assert ids == [[A, A]]


def test_a_minimum_length_forbids_an_early_end_but_not_the_limit():
    table = {(): {EOS: 0.6, A: 0.4}, (A,): {EOS: 0.6, A: 0.4}, (A, A): {EOS: 0.6, B: 0.4}}
    assert greedy(table_step(table, 1, []), BOS, EOS, torch.tensor([10])) == [[]]
    assert greedy(table_step(table, 1, []), BOS, EOS, torch.tensor([10]), Rules(min_length=2)) == [[A, A]]
    ids, _ = beam_search(table_step(table, 2, []), BOS, EOS, torch.tensor([10]), 2, 0.0, Rules(min_length=2))
    assert ids == [[A, A]]  # p 0.096, above [A A B] (0.064)
    assert greedy(table_step(table, 1, []), BOS, EOS, torch.tensor([1]), Rules(min_length=2)) == [[]]  # the limit first
    ids, _ = beam_search(table_step(table, 2, []), BOS, EOS, torch.tensor([2]), 2, 0.0, Rules(min_length=3))
    assert ids in ([[A]], [[B]])  # EOS forced at the limit, before the minimum: a hypothesis is still found


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_no_repeat_ngram_size_forbids_a_second_copy_of_an_ngram(search):
    table = {(): {A: 1.0}, (A,): {B: 1.0}, (A, B): {A: 0.9, EOS: 0.1}, (A, B, A): {B: 0.6, EOS: 0.4}}

    def decode(rules):
        if search == "greedy":
            return greedy(table_step(table, 1, []), BOS, EOS, torch.tensor([10]), rules)[0]
        return beam_search(table_step(table, 2, []), BOS, EOS, torch.tensor([10]), 2, 0.0, rules)[0][0]

    assert decode(Rules()) == [A, B, A, B]
    assert decode(Rules(no_repeat_ngram_size=2)) == [A, B, A]  # a second "A B" is forbidden
    assert decode(Rules(no_repeat_ngram_size=3)) == [A, B, A, B]  # no trigram repeats here
    assert decode(Rules(no_repeat_ngram_size=1)) == [A, B]  # no token twice


def test_a_gpt_continuing_prompts_through_the_search_equals_its_own_generation():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=VOCAB, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()
    for weight in gpt.parameters():  # larger weights than GPT-2's initialisation: outputs that differ by prompt
        torch.nn.init.normal_(weight, std=0.5)
    prompt = torch.randint(3, VOCAB, (3, 5))
    sep = torch.full((3, 1), BOS)
    ours = greedy(decoder_stepper(gpt, prompt), BOS, EOS, torch.tensor([9, 9, 9]))  # 8 tokens, then EOS forced
    full = gpt.generate(torch.cat([prompt, sep], 1), 8, temperature=0.0, eos_id=EOS, use_cache=False)[:, 6:].tolist()
    assert ours == [row[: row.index(EOS)] if EOS in row else row for row in full]
    assert len({tuple(row) for row in ours}) > 1
    beams, _ = beam_search(decoder_stepper(gpt, prompt, copies=3), BOS, EOS, torch.tensor([8, 8, 8]), 3)
    assert beams == beam_search(decoder_stepper(gpt, prompt, copies=3), BOS, EOS, torch.tensor([8, 8, 8]), 3)[0]
    assert all(len(b) <= 8 for b in beams)


def test_warm_start_copies_the_encoder_into_the_decoder_but_cross_attention():
    model = tiny(norm="post", embedding_norm=True, final_norm=False, decoder_norms="encoder", warm_start=True,
                 init_from="somewhere")
    cross = {k: v.clone() for k, v in model.decoder.state_dict().items() if "cross" in k}
    fresh = model.warm_start_decoder()
    assert set(fresh) == set(cross) and fresh
    encoder, decoder = model.encoder.state_dict(), model.decoder.state_dict()
    for name in ("blocks.0.attn.qkv.weight", "blocks.0.mlp.fc.weight", "blocks.0.ln2.bias", "emb_ln.weight"):
        assert torch.equal(decoder[name], encoder[name]), name
    assert all(torch.equal(decoder[k], v) for k, v in cross.items())


def test_warm_cross_starts_cross_attention_as_the_encoders_self_attention_over_the_source():
    model = tiny(norm="post", embedding_norm=True, final_norm=False, decoder_norms="encoder", warm_start=True,
                 warm_cross=True, init_from="somewhere")
    assert model.warm_start_decoder() == []
    x = torch.randn(2, 5, 16)
    for i, block in enumerate(model.decoder.blocks):  # attending to x itself, it is the encoder's attention
        encoder_block = model.encoder.blocks[i]
        assert torch.allclose(block.cross(x, block.cross.memory(x), None), encoder_block.attn(x), atol=1e-6)
        assert torch.equal(block.ln_cross.weight, encoder_block.ln1.weight)
    with pytest.raises(ValueError, match="model.warm_cross.*model.warm_start=true"):
        Seq2SeqConfig(vocab_size=VOCAB, warm_cross=True)


def test_warm_start_needs_the_encoders_layout_and_a_checkpoint():
    with pytest.raises(ValueError, match="model.warm_start.*decoder_norms=encoder"):
        Seq2SeqConfig(vocab_size=VOCAB, warm_start=True, init_from="x")
    with pytest.raises(ValueError, match="model.warm_start.*model.init_from"):
        Seq2SeqConfig(vocab_size=VOCAB, warm_start=True, decoder_norms="encoder")


def test_options_default_to_the_original_layout():
    cfg = Seq2SeqConfig(vocab_size=VOCAB)
    model = Seq2Seq(cfg)
    assert not model.decoder.blocks[0].post_norm and isinstance(model.decoder.ln_f, torch.nn.LayerNorm)
    assert not hasattr(model.decoder, "logits_bias") and all(p.requires_grad for p in model.parameters())
