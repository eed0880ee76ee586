"""Behavioural tests for the GPT model: causality, caching, sampling, groups, training."""

import pytest
import torch
import torch.nn.functional as F

from lmtemplate.models import GPT, GPTConfig


def tiny(**overrides) -> GPT:
    torch.manual_seed(0)
    cfg = dict(vocab_size=32, block_size=16, n_layer=2, n_head=4, n_embd=32)
    return GPT(GPTConfig(**{**cfg, **overrides})).eval()


def prompts(batch=2, length=5, vocab=32, seed=1):
    return torch.randint(vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_causality(positions):
    model = tiny(positions=positions)
    idx = prompts(1, 12)
    t = 6
    changed = idx.clone()
    changed[0, t + 1] = (idx[0, t + 1] + 1) % 32
    a, b = model(idx), model(changed)
    assert torch.allclose(a[:, : t + 1], b[:, : t + 1], atol=1e-6)
    assert not torch.allclose(a[:, t + 1], b[:, t + 1], atol=1e-4)


# float64 so that cached and recomputed logits cannot round to different argmax/sample choices.
@pytest.mark.parametrize("positions", ["learned", "rotary"])
@pytest.mark.parametrize("new_tokens", [8, 25], ids=["within_block", "crossing_block"])
def test_greedy_cache_matches_recompute(new_tokens, positions):
    model = tiny(positions=positions).double()
    idx = prompts(2, 5)
    cached = model.generate(idx, new_tokens, temperature=0, use_cache=True)
    full = model.generate(idx, new_tokens, temperature=0, use_cache=False)
    assert cached.shape == (2, 5 + new_tokens)
    assert torch.equal(cached[:, :5], idx)
    assert torch.equal(cached, full)
    assert len(set(map(tuple, full.tolist()))) == 2  # the two rows differ: the batch is really batched


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_cache_prefill_after_prefix_matches_full_pass(positions):
    model = tiny(positions=positions).double()
    idx = prompts(2, 12)
    caches = model.new_caches(2)
    first = model(idx[:, :4], caches)
    rest = model(idx[:, 4:], caches, start_pos=4)  # several tokens after a prefix: needs the explicit mask
    assert torch.allclose(torch.cat([first, rest], dim=1), model(idx), atol=1e-10)


def test_seeded_sampling_same_with_and_without_cache():
    model = tiny().double()
    idx = prompts(2, 5)
    kwargs = dict(max_new_tokens=20, temperature=0.8, top_k=5, top_p=0.9)
    a = model.generate(idx, **kwargs, use_cache=True, generator=torch.Generator().manual_seed(7))
    b = model.generate(idx, **kwargs, use_cache=False, generator=torch.Generator().manual_seed(7))
    c = model.generate(idx, **kwargs, use_cache=True, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)  # the generator really drives the sampling


def test_top_k_one_is_greedy():
    model = tiny()
    idx = prompts(2, 5)
    greedy = model.generate(idx, 10, temperature=0)
    sampled = model.generate(idx, 10, temperature=1.5, top_k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sampled, greedy)


def test_generate_restores_training_mode():
    model = tiny(dropout=0.1).train()
    model.generate(prompts(1, 3), 2)
    assert model.training


def test_param_groups():
    model = tiny()
    decay, no_decay = model.param_groups(0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    decay_ids = {id(p) for p in decay["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.dim() == 2 for p in decay["params"])
    assert not any("emb" in names[i] or "ln" in names[i] or names[i].endswith("bias") for i in decay_ids)
    assert id(model.tok_emb.weight) not in decay_ids
    grouped = [id(p) for g in (decay, no_decay) for p in g["params"]]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == {id(p) for p in model.parameters() if p.requires_grad}


def test_rotary_positions_are_relative():
    """positions='rotary': no position table, and shifting a whole sequence to later positions changes nothing
    (attention sees only distances); with the learned table the same shift changes the logits."""
    rotary, learned = tiny(positions="rotary"), tiny()
    assert rotary.pos_emb is None and not any("pos_emb" in name for name, _ in rotary.named_parameters())
    assert rotary.num_params() == rotary.num_params(non_embedding=False)
    x = prompts(2, 6)
    assert torch.allclose(rotary(x), rotary(x, start_pos=5), atol=1e-5)
    assert not torch.allclose(learned(x), learned(x, start_pos=5), atol=1e-3)


def test_tied_weights():
    model = tiny()
    assert model.lm_head.weight is model.tok_emb.weight


def test_invalid_shapes_raise():
    model = tiny()
    with pytest.raises(ValueError, match="17.*16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="vocab_size"):
        GPT(GPTConfig(vocab_size=0))
    with pytest.raises(ValueError, match=r"model\.n_embd.*model\.n_head"):
        GPT(GPTConfig(vocab_size=32, n_embd=30, n_head=4))
    with pytest.raises(ValueError, match=r"model\.positions: 'sinus' is not one of learned, rotary"):
        GPTConfig(positions="sinus")
    with pytest.raises(ValueError, match=r"model\.positions: rotary needs an even head size, got 3"):
        GPTConfig(positions="rotary", n_embd=12, n_head=4)


def test_flops_per_token():
    model = tiny()
    assert model.flops_per_token() == 6 * model.num_params() + 12 * 2 * 32 * 16
    assert model.num_params(non_embedding=False) - model.num_params() == 16 * 32


def test_overfits_one_batch(one_thread):
    # 2 x 16 random targets, each preceded by a unique prefix, against ~27k parameters:
    # pure memorisation, which AdamW at lr 3e-3 reaches well within 100 steps.
    model = tiny().train()
    batch = prompts(2, 17, seed=3)
    x, y = batch[:, :-1], batch[:, 1:]
    opt = torch.optim.AdamW(model.param_groups(0.01), lr=3e-3)
    for _ in range(100):
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1


class CountingGPT(GPT):
    """A GPT whose next token is always (last token + 1) mod vocab, to script eos timing."""

    def forward(self, idx, caches=None, start_pos=0):
        return F.one_hot((idx + 1) % self.cfg.vocab_size, self.cfg.vocab_size).double() * 10


@pytest.mark.parametrize("use_cache", [True, False])
def test_eos_rows_stay_ended(use_cache):
    model = CountingGPT(GPTConfig(vocab_size=32, block_size=16, n_layer=1, n_head=1, n_embd=8))
    idx = torch.tensor([[0, 3], [0, 10]])
    out = model.generate(idx, 6, temperature=0, eos_id=5, use_cache=use_cache)
    assert out.tolist() == [[0, 3, 4, 5, 5, 5, 5, 5], [0, 10, 11, 12, 13, 14, 15, 16]]


@pytest.mark.parametrize("use_cache", [True, False])
def test_eos_stops_when_all_rows_ended(use_cache):
    model = CountingGPT(GPTConfig(vocab_size=32, block_size=16, n_layer=1, n_head=1, n_embd=8))
    idx = torch.tensor([[0, 3], [0, 6]])
    out = model.generate(idx, 10, temperature=0, eos_id=8, use_cache=use_cache)
    assert out.tolist() == [[0, 3, 4, 5, 6, 7, 8], [0, 6, 7, 8, 8, 8, 8]]


class FixedGPT(GPT):
    """A GPT that always predicts tokens 7, 2, 9, 4 with probabilities 0.5, 0.3, 0.15, 0.05."""

    def forward(self, idx, caches=None, start_pos=0):
        logits = torch.full((*idx.shape, self.cfg.vocab_size), float("-inf"), dtype=torch.float64)
        logits[..., [7, 2, 9, 4]] = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64).log()
        return logits


@pytest.mark.parametrize("top_p, kept", [(0.0, {7}), (0.6, {7, 2}), (0.85, {7, 2, 9}), (1.0, {7, 2, 9, 4})])
def test_top_p_keeps_smallest_set_reaching_p(top_p, kept):
    model = FixedGPT(GPTConfig(vocab_size=32, block_size=16, n_layer=1, n_head=1, n_embd=8))
    out = model.generate(torch.zeros(1, 1, dtype=torch.long), 300, top_p=top_p, use_cache=False,
                         generator=torch.Generator().manual_seed(0))
    assert set(out[0, 1:].tolist()) == kept


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_activation_checkpointing_gives_the_same_loss_and_gradients(positions):
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=50, block_size=16, n_layer=3, n_head=2, n_embd=32, positions=positions)
    plain = GPT(cfg)
    ckpt = GPT(GPTConfig(**{**cfg.__dict__, "activation_checkpointing": True}))
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randint(50, (4, 17))
    grads = []
    for model in (plain, ckpt):
        loss = F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        grads.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    assert torch.equal(grads[0][0], grads[1][0])
    assert all(torch.allclose(grads[0][1][n], grads[1][1][n], atol=1e-6) for n in grads[0][1])


@pytest.mark.slow
def test_compiled_model_matches_eager():
    """torch.compile on CPU (inductor, C++ codegen: ~30-60 s to compile here, hence slow)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32))
    x = torch.randint(50, (4, 17))
    eager = F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
    model.compile()
    compiled = F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
    compiled.backward()
    assert torch.allclose(eager, compiled, atol=1e-5)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert "_orig_mod" not in "".join(model.state_dict())  # checkpoints stay compatible with eager models
