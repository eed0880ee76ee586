"""Behavioural tests for the GPT model: causality, caching, sampling, groups, training."""

import pytest
import torch
import torch.nn.functional as F

from lmtemplate.models import GPT, GPTConfig
from lmtemplate.models.gpt import llama3_frequencies, rotary_tables


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


# ------------------------------------------------------------------ the Llama family's options, one test each

LLAMA = dict(positions="rotary", norm_type="rmsnorm", mlp="swiglu", bias=False)


def test_rmsnorm_scales_without_centering_and_has_no_bias():
    model = tiny(norm_type="rmsnorm")
    norms = [m for m in model.modules() if isinstance(m, torch.nn.RMSNorm)]
    assert len(norms) == 2 * 2 + 1 and not any(isinstance(m, torch.nn.LayerNorm) for m in model.modules())
    assert all(m.eps == 1e-5 for m in norms) and not any(n.endswith(("ln1.bias", "ln_f.bias")) for n, _ in
                                                         model.named_parameters())
    x = torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(0)) + 3.0
    y = model.ln_f(x)  # weight ones: each row divided by its root mean square, its mean kept
    assert torch.allclose(y, x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5), atol=1e-6)
    assert (y.mean(-1) > 0.5).all()


def test_swiglu_mlp_is_down_of_silu_gate_times_up_with_its_own_width():
    model = tiny(mlp="swiglu", intermediate_size=24)
    mlp = model.blocks[0].mlp
    assert mlp.fc.weight.shape == (2 * 24, 32) and mlp.proj.weight.shape == (32, 24)
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(0))
    gate, up = mlp.fc.weight.split(24)
    expected = (F.silu(x @ gate.T + mlp.fc.bias[:24]) * (x @ up.T + mlp.fc.bias[24:])) @ mlp.proj.weight.T + mlp.proj.bias
    assert torch.allclose(mlp(x), expected, atol=1e-6)
    assert tiny(intermediate_size=24).blocks[0].mlp.fc.weight.shape == (24, 32)  # the GELU MLP's width too


@pytest.mark.parametrize("n_kv_head", [2, 1], ids=["grouped-query", "multi-query"])
def test_grouped_query_attention_is_multi_head_attention_with_shared_keys_and_values(n_kv_head):
    """A GQA model computes what a full multi-head model computes whose k/v heads repeat its own; fewer parameters."""
    gqa = tiny(positions="rotary", n_kv_head=n_kv_head)
    full = tiny(positions="rotary")
    state, head = gqa.state_dict(), 32 // 4
    for i in range(2):
        q, k, v = state[f"blocks.{i}.attn.qkv.weight"].split([32, n_kv_head * head, n_kv_head * head])
        repeat = [t.view(n_kv_head, head, 32).repeat_interleave(4 // n_kv_head, 0).reshape(32, 32) for t in (k, v)]
        state[f"blocks.{i}.attn.qkv.weight"] = torch.cat([q, *repeat])
        qb, kb, vb = state[f"blocks.{i}.attn.qkv.bias"].split([32, n_kv_head * head, n_kv_head * head])
        state[f"blocks.{i}.attn.qkv.bias"] = torch.cat([qb, *(b.view(n_kv_head, head).repeat_interleave(
            4 // n_kv_head, 0).flatten() for b in (kb, vb))])
    full.load_state_dict(state)
    x = prompts(2, 10)
    assert torch.allclose(gqa(x), full(x), atol=1e-5)
    assert gqa.num_params() < full.num_params()


@pytest.mark.parametrize("n_kv_head", [2, 1], ids=["grouped-query", "multi-query"])
def test_grouped_query_kv_cache_holds_fewer_heads_and_matches_recompute(n_kv_head):
    model = tiny(**LLAMA, n_kv_head=n_kv_head).double()
    assert model.new_caches(2)[0].k.shape == (2, n_kv_head, 16, 8)
    idx = prompts(2, 5)
    assert torch.equal(model.generate(idx, 20, temperature=0), model.generate(idx, 20, temperature=0, use_cache=False))
    caches = model.new_caches(2)
    prefill = torch.cat([model(idx[:, :3], caches), model(idx[:, 3:], caches, start_pos=3)], dim=1)
    assert torch.allclose(prefill, model(idx), atol=1e-10)


def test_rope_theta_sets_the_rotary_frequencies():
    cos, sin = rotary_tables(8, 4, base=500.0)
    angles = torch.arange(4.0)[:, None] / 500.0 ** (torch.arange(0, 8, 2) / 8)
    assert torch.allclose(cos, angles.cos()) and torch.allclose(sin, angles.sin())
    x = prompts(1, 10)
    assert not torch.allclose(tiny(positions="rotary")(x), tiny(positions="rotary", rope_theta=500.0)(x), atol=1e-4)


def test_llama3_rope_scaling_slows_the_low_frequencies_only():
    """Wavelengths beyond original / low_freq_factor are divided by factor, those under original / high_freq_factor
    kept, the ones between blended."""
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 32}
    plain = 1.0 / 10000.0 ** (torch.arange(0, 16, 2) / 16)
    scaled = llama3_frequencies(plain, scaling)
    wavelength = 2 * torch.pi / plain
    short, long = wavelength < 32 / 4, wavelength > 32
    assert short.any() and long.any() and (~short & ~long).any()
    assert torch.equal(scaled[short], plain[short]) and torch.allclose(scaled[long], plain[long] / 8)
    between = ~short & ~long
    assert ((scaled[between] < plain[between]) & (scaled[between] > plain[between] / 8)).all()
    assert torch.equal(rotary_tables(16, 5, scaling=scaling)[0], torch.outer(torch.arange(5.0), scaled).cos())


def test_untied_embeddings_have_an_output_matrix_of_their_own():
    model = tiny(tie_embeddings=False)
    assert model.lm_head.weight is not model.tok_emb.weight
    assert set(model.state_dict()) == set(tiny().state_dict())
    assert model.num_params(non_embedding=False) - model.num_params() == 16 * 32 + 32 * 32  # positions, input table
    decay = {id(p) for p in model.param_groups(0.1)[0]["params"]}
    assert id(model.lm_head.weight) in decay and id(model.tok_emb.weight) not in decay


def test_a_bias_switch_per_projection_kind():
    """Qwen2's: q/k/v biases on, the rest off; each kind follows model.bias unless set."""
    names = {n for n, _ in tiny(bias=False, qkv_bias=True).named_parameters() if n.endswith("bias")}
    assert names == {"blocks.0.attn.qkv.bias", "blocks.1.attn.qkv.bias"}
    names = {n for n, _ in tiny(out_bias=False, mlp_bias=False).named_parameters() if n.startswith("blocks.0")}
    assert "blocks.0.attn.qkv.bias" in names and "blocks.0.ln1.bias" in names
    assert not names & {"blocks.0.attn.proj.bias", "blocks.0.mlp.fc.bias", "blocks.0.mlp.proj.bias"}


def test_defaults_keep_the_gpt2_layout_and_its_parameters():
    model = tiny()
    shapes = {n: tuple(p.shape) for n, p in model.state_dict().items() if n.startswith("blocks.0.")}
    assert shapes == {"blocks.0.ln1.weight": (32,), "blocks.0.ln1.bias": (32,), "blocks.0.attn.qkv.weight": (96, 32),
                      "blocks.0.attn.qkv.bias": (96,), "blocks.0.attn.proj.weight": (32, 32),
                      "blocks.0.attn.proj.bias": (32,), "blocks.0.ln2.weight": (32,), "blocks.0.ln2.bias": (32,),
                      "blocks.0.mlp.fc.weight": (128, 32), "blocks.0.mlp.fc.bias": (128,),
                      "blocks.0.mlp.proj.weight": (32, 128), "blocks.0.mlp.proj.bias": (32,)}


@pytest.mark.parametrize("option, message", [
    ({"n_kv_head": 3}, r"model\.n_kv_head: expected a divisor of model\.n_head \(4\)"),
    ({"norm_type": "batchnorm"}, r"model\.norm_type: 'batchnorm' is not one of layernorm, rmsnorm"),
    ({"mlp": "geglu"}, r"model\.mlp: 'geglu' is not one of gelu, swiglu"),
    ({"intermediate_size": -1}, r"model\.intermediate_size: expected >= 0"),
    ({"rope_theta": 0.0}, r"model\.rope_theta: expected a positive number"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, r"model\.rope_scaling: rope_type 'yarn' is not supported"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, r"model\.rope_scaling: llama3 needs low_freq_factor"),
])
def test_invalid_llama_options_raise(option, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**option)


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
