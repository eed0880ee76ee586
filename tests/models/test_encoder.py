"""Behavioural tests for the bidirectional encoder, rotary positions and the masked-LM head."""

import pytest
import torch
import torch.nn.functional as F

from lmtemplate.models.encoder import Encoder, EncoderConfig, MaskedLMHead
from lmtemplate.models.gpt import GPT, GPTConfig, rotary_tables, rotate

VOCAB = 40


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**overrides) -> Encoder:
    torch.manual_seed(0)
    cfg = dict(vocab_size=VOCAB, block_size=16, n_layer=2, n_head=2, n_embd=16)
    return Encoder(EncoderConfig(**{**cfg, **overrides})).eval()


def ids(batch=2, length=10, seed=1):
    return torch.randint(VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_padding_ids_do_not_change_real_tokens(positions):
    """With attention_mask 0 on the padded tail, the pad ids cannot reach the real tokens' hidden states."""
    model = tiny(positions=positions)
    x = ids(2, 10)
    lengths = torch.tensor([6, 8])
    attention_mask = (torch.arange(10)[None, :] < lengths[:, None]).long()
    other = x.clone()
    other[attention_mask == 0] = (x[attention_mask == 0] + 7) % VOCAB
    real = attention_mask.bool()
    a, b = model(x, attention_mask), model(other, attention_mask)
    assert torch.allclose(a[real], b[real], atol=1e-6)
    # Without the mask the same change does reach the real tokens: the mask is what protects them.
    assert not torch.allclose(model(x)[real], model(other)[real], atol=1e-4)


def test_encoder_is_bidirectional_gpt_is_causal():
    """Changing the last token moves the first position's hidden state in the encoder, not in the GPT."""
    x = ids(1, 10)
    changed = x.clone()
    changed[0, -1] = (x[0, -1] + 1) % VOCAB
    encoder = tiny()
    assert not torch.allclose(encoder(x)[:, 0], encoder(changed)[:, 0], atol=1e-4)
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=VOCAB, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()
    assert torch.allclose(gpt.features(x)[:, :-1], gpt.features(changed)[:, :-1], atol=1e-6)
    assert not torch.allclose(gpt.features(x)[:, -1], gpt.features(changed)[:, -1], atol=1e-4)


def test_rotate_preserves_norms():
    """A rotation by any position's angle keeps each query/key vector's length."""
    x = torch.randn(2, 3, 12, 8, generator=torch.Generator().manual_seed(0))
    cos, sin = rotary_tables(8, 16)
    rotated = rotate(x, cos, sin)
    assert rotated.shape == x.shape
    assert torch.allclose(rotated.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    assert not torch.allclose(rotated[:, :, 1:], x[:, :, 1:], atol=1e-3)  # positions > 0 do move
    assert torch.allclose(rotated[:, :, 0], x[:, :, 0])  # position 0: angle 0


def test_rotary_dot_product_depends_on_relative_offset_only():
    """<rot(q, i), rot(k, j)> equals <rot(q, i+s), rot(k, j+s)>, and changes with j - i."""
    d, length = 8, 24
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(d, generator=g), torch.randn(d, generator=g)
    cos, sin = rotary_tables(d, length)
    rq = rotate(q.expand(1, 1, length, d), cos, sin)[0, 0]  # rq[p]: q rotated for position p
    rk = rotate(k.expand(1, 1, length, d), cos, sin)[0, 0]
    for i, j, s in [(0, 3, 5), (2, 2, 9), (7, 1, 11), (4, 10, 13)]:
        assert torch.allclose(rq[i] @ rk[j], rq[i + s] @ rk[j + s], atol=1e-5)
    assert not torch.allclose(rq[0] @ rk[3], rq[0] @ rk[4], atol=1e-3)


def test_rotary_encoder_has_no_position_table_and_sees_order():
    """positions='rotary': no pos_emb, yet swapping two tokens is not just a swap of the outputs."""
    model = tiny(positions="rotary", type_vocab_size=0)
    assert model.pos_emb is None
    assert not any("pos_emb" in name for name, _ in model.named_parameters())
    x = ids(1, 8)
    x[0, 2], x[0, 5] = 3, 11
    perm = torch.arange(8)
    perm[2], perm[5] = 5, 2
    out, out_swapped = model(x), model(x[:, perm])
    # A model blind to order would be permutation-equivariant: out_swapped == out[:, perm].
    assert not torch.allclose(out_swapped, out[:, perm], atol=1e-4)


def test_token_types():
    """type_vocab_size=2: token_type_ids change the output; 0: no type embedding, ids ignored."""
    x = ids(1, 8)
    types = torch.zeros_like(x)
    types[:, 4:] = 1
    model = tiny(type_vocab_size=2)
    assert model.type_emb is not None and model.type_emb.num_embeddings == 2
    assert torch.allclose(model(x), model(x, token_type_ids=torch.zeros_like(x)))  # default: all type 0
    assert not torch.allclose(model(x, token_type_ids=types)[:, 4:], model(x)[:, 4:], atol=1e-4)
    plain = tiny(type_vocab_size=0)
    assert plain.type_emb is None
    assert not any("type_emb" in name for name, _ in plain.named_parameters())


def test_config_errors_name_the_positions_field():
    """Unknown positions, and rotary with an odd head size, are ValueErrors naming model.positions."""
    with pytest.raises(ValueError, match=r"model\.positions"):
        EncoderConfig(positions="x")
    with pytest.raises(ValueError, match=r"model\.positions"):
        EncoderConfig(positions="rotary", n_embd=12, n_head=4)  # head size 3
    EncoderConfig(positions="rotary", n_embd=12, n_head=3)  # head size 4: fine
    EncoderConfig(positions="learned", n_embd=12, n_head=4)  # odd head size is fine without rotary


def test_masked_lm_head_shape_and_tied_embedding():
    """The head maps (B, T, n_embd) to (B, T, vocab) through the encoder's own token embedding."""
    model = tiny()
    head = MaskedLMHead(model.cfg, model.tok_emb)
    x = ids(2, 7)
    h = model(x)
    logits = head(h)
    assert logits.shape == (2, 7, VOCAB)
    assert head.embedding.weight is model.tok_emb.weight
    before = model.tok_emb.weight.detach().clone()
    F.cross_entropy(head(h.detach()).flatten(0, 1), x.flatten()).backward()
    with torch.no_grad():  # one plain SGD step on the head's parameters only
        for p in head.parameters():
            p -= 0.1 * p.grad
    assert not torch.allclose(model.tok_emb.weight, before)


def test_gpt_logits_are_lm_head_of_features():
    """GPT.forward is lm_head(GPT.features): the tied head reads the same hidden states heads see."""
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=VOCAB, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()
    x = ids(2, 9)
    features = gpt.features(x)
    assert features.shape == (2, 9, 16)
    assert torch.allclose(gpt(x), gpt.lm_head(features))
    assert torch.allclose(gpt(x), features @ gpt.tok_emb.weight.T, atol=1e-6)


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_activation_checkpointing_gives_the_same_gradients(positions):
    """Recomputing blocks in backward (train mode, no dropout) changes neither loss nor gradients."""
    plain = tiny(positions=positions).train()
    ckpt = tiny(positions=positions, activation_checkpointing=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = ids(2, 10)
    attention_mask = torch.ones_like(x)
    attention_mask[0, 7:] = 0
    types = torch.zeros_like(x)
    types[:, 5:] = 1
    weights = torch.randn(2, 10, 16, generator=torch.Generator().manual_seed(2))
    results = []
    for model in (plain, ckpt):
        loss = (model(x, attention_mask, types) * weights).sum()
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert torch.allclose(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys()
    assert all(torch.allclose(grads_a[n], grads_b[n], atol=1e-6) for n in grads_a)
    assert any(grads_a[n].abs().max() > 0 for n in grads_a)
