#!/usr/bin/env python3
"""Reference data for DeepSeek-V3 config variants, in the golden format.

The main model is HF transformers' DeepseekV3ForCausalLM (float64, eager attention, eager
experts). MTP has no HF implementation: it is built here from HF's own DeepseekV3DecoderLayer
and DeepseekV3RMSNorm, driven as /work/shared/spec/deepseek_v3.md (MTP section) says.

  python3 tools/ref/make_reference.py --out tests/data/variants       # regenerate every variant
  python3 tools/ref/make_reference.py --self-check                    # reproduce golden tiny
  python3 tools/ref/make_reference.py --verify tests/data/variants    # reload, recompute (HF + spec impl)

See tools/ref/README.md.
"""
import argparse
import copy
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM
from transformers.models.deepseek_v3.modeling_deepseek_v3 import (
    DeepseekV3DecoderLayer,
    DeepseekV3RMSNorm,
    DeepseekV3TopkRouter,
)

MTP_LAMBDA = 0.3
ROUTING_MARGIN = 5e-4
GOLDEN_TINY = "/work/shared/golden/tiny"

# ---------------------------------------------------------------------------------------------
# Variants
# ---------------------------------------------------------------------------------------------

BASE = dict(
    vocab_size=64, hidden_size=32, intermediate_size=32, moe_intermediate_size=8,
    num_hidden_layers=3, first_k_dense_replace=1, num_attention_heads=4, num_key_value_heads=4,
    q_lora_rank=12, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8,
    n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2, n_group=4, topk_group=2,
    routed_scaling_factor=2.5, norm_topk_prob=True, num_nextn_predict_layers=1,
    rms_norm_eps=1e-6, max_position_embeddings=256, tie_word_embeddings=False,
    rope_theta=10000.0, rope_scaling=None,
)


def yarn(factor, orig, mscale, mscale_all_dim):
    return {"type": "yarn", "factor": factor, "original_max_position_embeddings": orig,
            "beta_fast": 32, "beta_slow": 1, "mscale": mscale, "mscale_all_dim": mscale_all_dim}


# style "hf": config.json as transformers 5.x writes it (rope under rope_parameters);
# style "real": the key set of the public DeepSeek-V3 config.json (top-level rope_theta/rope_scaling).
VARIANTS = {
    "qlora_null": dict(style="real", T=10, cfg=dict(q_lora_rank=None)),
    "ngroup1": dict(style="hf", T=10, cfg=dict(n_group=1, topk_group=1, routed_scaling_factor=1.5)),
    "no_norm_topk": dict(style="hf", T=10, cfg=dict(norm_topk_prob=False)),
    "dense0": dict(style="hf", T=10, cfg=dict(first_k_dense_replace=0, num_hidden_layers=2)),
    "mtp2": dict(style="hf", T=12, cfg=dict(num_nextn_predict_layers=2, num_hidden_layers=2)),
    # orig 64 with rope dim 8: low=0, high=2, ramp = [0, .5, 1, 1] (a fractional ramp entry)
    "yarn": dict(style="real", T=12, cfg=dict(max_position_embeddings=256,
                                              rope_scaling=yarn(4.0, 64, 1.0, 1.0))),
    # orig 4 < T: low == high == 0, exercising the "high += 0.001" branch; V2-Lite mscales
    "yarn_mscale": dict(style="real", T=12, cfg=dict(max_position_embeddings=16,
                                                     rope_scaling=yarn(4.0, 4, 0.707, 0.707))),
    # mscale != mscale_all_dim: cos/sin scaled by mscale(4,1)/mscale(4,.5), softmax by mscale(4,.5)^2
    "yarn_mscale_diff": dict(style="real", T=12, cfg=dict(max_position_embeddings=256,
                                                          rope_scaling=yarn(4.0, 64, 1.0, 0.5))),
    "vdim": dict(style="hf", T=10, cfg=dict(v_head_dim=12, qk_nope_head_dim=6, qk_rope_head_dim=4)),
    "heads_experts": dict(style="real", T=8, cfg=dict(
        num_attention_heads=6, num_key_value_heads=6, n_routed_experts=16, num_experts_per_tok=3,
        n_group=4, topk_group=3, n_shared_experts=2, moe_intermediate_size=4,
        num_hidden_layers=2, routed_scaling_factor=1.8)),
}

# Keys of the public DeepSeek-V3 config.json (minus auto_map / quantization_config).
REAL_KEYS = [
    "vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size", "num_hidden_layers",
    "num_nextn_predict_layers", "num_attention_heads", "num_key_value_heads", "n_shared_experts",
    "n_routed_experts", "ep_size", "routed_scaling_factor", "kv_lora_rank", "q_lora_rank",
    "qk_rope_head_dim", "v_head_dim", "qk_nope_head_dim", "topk_method", "n_group", "topk_group",
    "num_experts_per_tok", "moe_layer_freq", "first_k_dense_replace", "norm_topk_prob",
    "scoring_func", "seq_aux", "hidden_act", "max_position_embeddings", "initializer_range",
    "rms_norm_eps", "use_cache", "bos_token_id", "eos_token_id", "tie_word_embeddings",
    "rope_theta", "rope_scaling", "attention_bias", "attention_dropout",
]
REAL_EXTRA = {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "ep_size": 1,
              "topk_method": "noaux_tc", "moe_layer_freq": 1, "scoring_func": "sigmoid",
              "seq_aux": True, "hidden_act": "silu", "initializer_range": 0.02, "use_cache": True,
              "bos_token_id": 0, "eos_token_id": 1, "attention_bias": False,
              "attention_dropout": 0.0, "torch_dtype": "float32"}


def variant_config_json(spec):
    """The config.json dict a checkpoint of this variant would carry."""
    cfg = copy.deepcopy(dict(BASE, **spec["cfg"]))
    if spec["style"] == "real":
        out = {k: cfg.get(k, REAL_EXTRA.get(k)) for k in REAL_KEYS}
        out.update({k: v for k, v in REAL_EXTRA.items() if k not in out})
        return out
    rope = {"rope_type": "default", "rope_theta": cfg.pop("rope_theta")}
    scaling = cfg.pop("rope_scaling")
    if scaling:
        rope = dict(scaling, rope_type=scaling["type"], rope_theta=rope["rope_theta"])
        del rope["type"]
    return json.loads(DeepseekV3Config(**cfg, rope_parameters=rope).to_json_string(use_diff=True))


def hf_config(config_json):
    # from_dict standardizes rope settings in place: never let it touch the dict we write out
    return DeepseekV3Config.from_dict(copy.deepcopy(config_json))


# ---------------------------------------------------------------------------------------------
# Model: HF main model + MTP modules from HF parts
# ---------------------------------------------------------------------------------------------

class MtpModule(nn.Module):
    """MTP module k = checkpoint layer L+k-1: enorm, hnorm, eh_proj, a decoder layer, shared_head.norm."""

    def __init__(self, config, layer_idx):
        super().__init__()
        h, eps = config.hidden_size, config.rms_norm_eps
        self.enorm = DeepseekV3RMSNorm(h, eps=eps)
        self.hnorm = DeepseekV3RMSNorm(h, eps=eps)
        self.eh_proj = nn.Linear(2 * h, h, bias=False)
        self.layer = DeepseekV3DecoderLayer(config, layer_idx)
        self.shared_head = nn.Module()
        self.shared_head.norm = DeepseekV3RMSNorm(h, eps=eps)


def build_model(config):
    torch.manual_seed(0)  # HF's random init is always overwritten; the seed only makes runs repeatable
    model = DeepseekV3ForCausalLM._from_config(
        config, attn_implementation="eager", experts_implementation="eager").double()
    L = config.num_hidden_layers
    mtps = nn.ModuleList(MtpModule(config, L + k) for k in range(config.num_nextn_predict_layers))
    return model, mtps.double()


def causal_mask(n, dtype):
    return torch.full((n, n), torch.finfo(dtype).min, dtype=dtype).triu(1)[None, None]


def ce(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def run(model, mtps, ids):
    """Main model (HF) then the MTP modules; every output stays on the autograd graph."""
    captured = {}
    hook = model.model.norm.register_forward_pre_hook(lambda m, a: captured.update(h0=a[0]))
    try:
        hidden_last = model.model(input_ids=ids, use_cache=False).last_hidden_state
    finally:
        hook.remove()
    logits = model.lm_head(hidden_last)
    out = {"logits": logits, "hidden_last": hidden_last, "loss": ce(logits[:, :-1], ids[:, 1:])}
    embed, T = model.model.embed_tokens, ids.shape[1]
    h_prev, mtp_sum = captured["h0"], 0.0
    for k, mtp in enumerate(mtps, start=1):
        n = T - k
        x = mtp.eh_proj(torch.cat([mtp.enorm(embed(ids[:, k:])), mtp.hnorm(h_prev[:, :n])], dim=-1))
        pos = torch.arange(n)[None]
        h_k = mtp.layer(x, attention_mask=causal_mask(n, x.dtype), position_ids=pos,
                        position_embeddings=model.model.rotary_emb(x, pos))
        logits_k = model.lm_head(mtp.shared_head.norm(h_k))
        out[f"mtp{k}.logits"] = logits_k
        out[f"mtp{k}.loss"] = ce(logits_k[:, :-1], ids[:, k + 1:])
        mtp_sum = mtp_sum + out[f"mtp{k}.loss"]
        h_prev = h_k
    if len(mtps):
        out["mtp_loss"] = MTP_LAMBDA / len(mtps) * mtp_sum
        out["total_loss"] = out["loss"] + out["mtp_loss"]
    return out


# ---------------------------------------------------------------------------------------------
# Checkpoint naming <-> HF parameters
# ---------------------------------------------------------------------------------------------

def unpack_experts(named):
    """HF packed experts (gate_up_proj [E,2I,H], down_proj [E,H,I]) -> per-expert checkpoint names."""
    out = {}
    for name, t in named.items():
        if name.endswith("mlp.experts.gate_up_proj"):
            pre, inter = name[: -len("gate_up_proj")], t.shape[1] // 2
            for e in range(t.shape[0]):
                out[f"{pre}{e}.gate_proj.weight"] = t[e, :inter]
                out[f"{pre}{e}.up_proj.weight"] = t[e, inter:]
        elif name.endswith("mlp.experts.down_proj"):
            pre = name[: -len("down_proj")]
            for e in range(t.shape[0]):
                out[f"{pre}{e}.down_proj.weight"] = t[e]
        else:
            out[name] = t
    return out


def pack_experts(ckpt, hf_names_shapes):
    """Checkpoint names -> HF state dict for the given HF names."""
    out = {}
    for name, shape in hf_names_shapes.items():
        if name.endswith("mlp.experts.gate_up_proj"):
            pre = name[: -len("gate_up_proj")]
            out[name] = torch.stack([torch.cat([ckpt[f"{pre}{e}.gate_proj.weight"],
                                                ckpt[f"{pre}{e}.up_proj.weight"]]) for e in range(shape[0])])
        elif name.endswith("mlp.experts.down_proj"):
            pre = name[: -len("down_proj")]
            out[name] = torch.stack([ckpt[f"{pre}{e}.down_proj.weight"] for e in range(shape[0])])
        else:
            out[name] = ckpt[name]
    return out


def mtp_prefix(config, k):
    return f"model.layers.{config.num_hidden_layers + k}."


def mtp_local_to_ckpt(local):
    return local[len("layer."):] if local.startswith("layer.") else local


def checkpoint_weights(model, mtps):
    """Every weight in DeepSeek-V3 checkpoint naming, MTP layers included (with their head/embed copies)."""
    ckpt = unpack_experts({n: t.detach() for n, t in model.state_dict().items()})
    for k, mtp in enumerate(mtps):
        pre = mtp_prefix(model.config, k)
        local = unpack_experts({n: t.detach() for n, t in mtp.state_dict().items()})
        ckpt.update({pre + mtp_local_to_ckpt(n): t for n, t in local.items()})
        ckpt[pre + "embed_tokens.weight"] = ckpt["model.embed_tokens.weight"]
        ckpt[pre + "shared_head.head.weight"] = ckpt["lm_head.weight"]
    return ckpt


def load_checkpoint(model, mtps, ckpt):
    main = {n: t.shape for n, t in model.state_dict().items()}
    model.load_state_dict({n: t.double() for n, t in pack_experts(ckpt, main).items()}, strict=True)
    for k, mtp in enumerate(mtps):
        pre = mtp_prefix(model.config, k)
        for shared, main_name in (("embed_tokens.weight", "model.embed_tokens.weight"),
                                  ("shared_head.head.weight", "lm_head.weight")):
            if not torch.equal(ckpt[pre + shared], ckpt[main_name]):
                raise ValueError(f"{pre + shared} differs from {main_name}")
        local_of = {mtp_local_to_ckpt(n): n for n in mtp.state_dict()}
        shapes = {c: mtp.state_dict()[n].shape for c, n in local_of.items()}
        own = {n[len(pre):]: t for n, t in ckpt.items() if n.startswith(pre)}
        packed = pack_experts(own, shapes)
        mtp.load_state_dict({local_of[c]: t.double() for c, t in packed.items()}, strict=True)


# ---------------------------------------------------------------------------------------------
# Random weights, routing margin
# ---------------------------------------------------------------------------------------------

def init_weight(name, shape, gen):
    """Scales like the golden model: activations O(1)."""
    def normal(std):
        return torch.randn(shape, generator=gen, dtype=torch.float64) * std
    if "embed_tokens" in name:
        return normal(1.0)
    if name.endswith("e_score_correction_bias"):
        return normal(0.05)
    if len(shape) == 1:  # every RMSNorm weight
        return 1.0 + normal(0.1)
    return normal(1.0 / math.sqrt(shape[-1]))


def randomize(model, mtps, gen):
    for module in [model, *mtps]:
        with torch.no_grad():
            for name, t in module.state_dict().items():
                t.copy_(init_weight(name, t.shape, gen))


def router_inputs(model, mtps, ids):
    captured, hooks = [], []
    for module in [*model.modules(), *mtps.modules()]:
        if isinstance(module, DeepseekV3TopkRouter):
            hooks.append(module.register_forward_hook(
                lambda m, a, o: captured.append((m, a[0].detach().reshape(-1, m.hidden_dim)))))
    try:
        with torch.no_grad():
            run(model, mtps, ids)
    finally:
        for h in hooks:
            h.remove()
    return captured


def routing_margin(router, x):
    """Smallest gap between a chosen and an unchosen score (groups and experts), as HF routes (fp32).

    Also requires the K-th kept score > margin, so masking dropped groups with 0.0 (older HF)
    or -inf (spec, HF 5.23) selects the same experts.
    """
    s = torch.sigmoid(x.float() @ router.weight.float().T)
    c = s + router.e_score_correction_bias.float()
    n_tok, E = c.shape
    G, TG, K = router.num_group, router.topk_group, router.top_k
    margins = []
    if TG < G:
        gs = c.view(n_tok, G, E // G).topk(2, dim=-1)[0].sum(-1).sort(-1, descending=True)[0]
        margins.append((gs[:, TG - 1] - gs[:, TG]).min())
    group_rank = c.view(n_tok, G, E // G).topk(2, dim=-1)[0].sum(-1).topk(TG, dim=-1)[1]
    keep = torch.zeros(n_tok, G, dtype=torch.bool).scatter_(1, group_rank, True)
    kept = c.masked_fill(~keep.repeat_interleave(E // G, dim=1), float("-inf"))
    top = kept.sort(-1, descending=True)[0]
    if K < E:
        margins.append((top[:, K - 1] - top[:, K]).min())
    margins.append(top[:, K - 1].min())
    return min(float(m) for m in margins)


@torch.no_grad()
def min_routing_margin(model, mtps, ids):
    return min(routing_margin(r, x) for r, x in router_inputs(model, mtps, ids))


# ---------------------------------------------------------------------------------------------
# Expected outputs
# ---------------------------------------------------------------------------------------------

def expected_outputs(model, mtps, ids):
    model.zero_grad(set_to_none=True)
    out = run(model, mtps, ids)
    out["loss"].backward()  # grads are d(main loss)/dW, as in the golden
    grads = unpack_experts({n: p.grad if p.grad is not None else torch.zeros_like(p)
                            for n, p in model.named_parameters()})
    result = {"input_ids": ids.clone()}
    for name, t in out.items():
        result[name] = t.detach().reshape(1) if t.dim() == 0 else t.detach()
    for name, g in grads.items():
        if not name.endswith("e_score_correction_bias"):
            result["grad." + name] = g
    return result


def to_f32(tensors):
    return {n: (t if t.dtype == torch.int64 else t.float()).contiguous() for n, t in tensors.items()}


def generate(name, spec, out_dir, max_seed=200):
    config_json = variant_config_json(spec)
    config = hf_config(config_json)
    model, mtps = build_model(config)
    for seed in range(max_seed):
        gen = torch.Generator().manual_seed(1000 + seed)
        randomize(model, mtps, gen)
        ids = torch.randint(0, config.vocab_size, (2, spec["T"]), generator=gen)
        margin = min_routing_margin(model, mtps, ids)
        if margin > ROUTING_MARGIN:
            break
    else:
        raise RuntimeError(f"{name}: no seed with routing margin > {ROUTING_MARGIN}")
    # Round the weights to fp32 first: the stored model must be exactly the one that produced the data.
    ckpt = to_f32(checkpoint_weights(model, mtps))
    load_checkpoint(model, mtps, ckpt)
    margin = min_routing_margin(model, mtps, ids)
    assert margin > ROUTING_MARGIN, (name, margin)
    expected = to_f32(expected_outputs(model, mtps, ids))
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config_json, f, indent=2, sort_keys=True)
        f.write("\n")
    save_file(ckpt, os.path.join(d, "model.safetensors"))
    save_file(expected, os.path.join(d, "expected.safetensors"))
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    print(f"{name:18s} seed {1000 + seed:5d}  margin {margin:.2e}  loss {expected['loss'].item():.4f}"
          f"  size {size / 1024:.0f} KiB")


# ---------------------------------------------------------------------------------------------
# Independent float64 implementation of /work/shared/spec/deepseek_v3.md (no HF code), used to
# show that HF and the spec give the same numbers on every variant (--spec-check).
# ---------------------------------------------------------------------------------------------

def spec_rope_settings(cfg):
    """(theta, scaling dict or None) from either config style."""
    if "rope_parameters" in cfg and cfg["rope_parameters"]:
        rp = dict(cfg["rope_parameters"])
        kind = rp.get("rope_type", rp.get("type", "default"))
        return rp["rope_theta"], (rp if kind == "yarn" else None)
    sc = cfg.get("rope_scaling")
    kind = (sc or {}).get("type", (sc or {}).get("rope_type", "default"))
    return cfg.get("rope_theta", 10000.0), (sc if kind == "yarn" else None)


def spec_mscale(s, m):
    return 0.1 * m * math.log(s) + 1.0 if s > 1 else 1.0


def spec_rope_tables(cfg, n):
    """cos, sin [n, d/2] and the softmax scale, as the spec's RoPE/Yarn/MLA sections say."""
    d = cfg["qk_rope_head_dim"]
    theta, yarn_cfg = spec_rope_settings(cfg)
    j = torch.arange(d // 2, dtype=torch.float64)
    f = theta ** (-2 * j / d)
    cs_scale, m = 1.0, 1.0
    if yarn_cfg:
        factor, orig = yarn_cfg["factor"], yarn_cfg["original_max_position_embeddings"]
        c = lambda r: d * math.log(orig / (r * 2 * math.pi)) / (2 * math.log(theta))
        low = max(math.floor(c(yarn_cfg.get("beta_fast", 32))), 0)
        high = min(math.ceil(c(yarn_cfg.get("beta_slow", 1))), d - 1)
        if low == high:
            high += 0.001
        ramp = ((j - low) / (high - low)).clamp(0, 1)
        f = f / factor * ramp + f * (1 - ramp)
        ms, msa = yarn_cfg.get("mscale", 1.0) or 0.0, yarn_cfg.get("mscale_all_dim", 0.0) or 0.0
        cs_scale = spec_mscale(factor, ms) / spec_mscale(factor, msa)
        if msa > 0:
            m = 0.1 * msa * math.log(factor) + 1
    ang = torch.arange(n, dtype=torch.float64)[:, None] * f[None]
    scale = (cfg["qk_nope_head_dim"] + d) ** -0.5 * m * m
    return ang.cos() * cs_scale, ang.sin() * cs_scale, scale


def spec_rmsnorm(x, w, eps):
    return w * x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)


def spec_rope(x, cos, sin):
    """Interleaved pairs (x[2j], x[2j+1]); x [..., n, d], cos/sin [n, d/2]."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2)


def spec_mla(cfg, W, p, x):
    B, n, _ = x.shape
    nh, nope, rope, vd = (cfg["num_attention_heads"], cfg["qk_nope_head_dim"],
                          cfg["qk_rope_head_dim"], cfg["v_head_dim"])
    eps, kvr = cfg["rms_norm_eps"], cfg["kv_lora_rank"]
    if cfg.get("q_lora_rank"):
        q = spec_rmsnorm(x @ W[p + "q_a_proj.weight"].T, W[p + "q_a_layernorm.weight"], eps)
        q = q @ W[p + "q_b_proj.weight"].T
    else:
        q = x @ W[p + "q_proj.weight"].T
    q = q.view(B, n, nh, nope + rope).transpose(1, 2)
    kv_a = x @ W[p + "kv_a_proj_with_mqa.weight"].T
    c_kv, k_pe = kv_a[..., :kvr], kv_a[..., kvr:]
    kv = spec_rmsnorm(c_kv, W[p + "kv_a_layernorm.weight"], eps) @ W[p + "kv_b_proj.weight"].T
    kv = kv.view(B, n, nh, nope + vd).transpose(1, 2)
    cos, sin, scale = spec_rope_tables(cfg, n)
    q_pe, k_pe = spec_rope(q[..., nope:], cos, sin), spec_rope(k_pe[:, None], cos, sin)
    score = (q[..., :nope] @ kv[..., :nope].transpose(-1, -2) + q_pe @ k_pe.transpose(-1, -2)) * scale
    score = score.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    o = score.softmax(-1) @ kv[..., nope:]
    return o.transpose(1, 2).reshape(B, n, nh * vd) @ W[p + "o_proj.weight"].T


def spec_mlp(W, p, x):
    return (F.silu(x @ W[p + "gate_proj.weight"].T) * (x @ W[p + "up_proj.weight"].T)) @ W[p + "down_proj.weight"].T


def spec_moe(cfg, W, p, x):
    shape, x = x.shape, x.reshape(-1, x.shape[-1])
    E, K, G, TG = cfg["n_routed_experts"], cfg["num_experts_per_tok"], cfg["n_group"], cfg["topk_group"]
    s = torch.sigmoid(x @ W[p + "gate.weight"].T)
    c = (s + W[p + "gate.e_score_correction_bias"]).detach()
    if G > 1:
        gscore = c.view(-1, G, E // G).topk(2, dim=-1)[0].sum(-1)
        keep = torch.zeros_like(gscore, dtype=torch.bool).scatter_(1, gscore.topk(TG, dim=-1)[1], True)
        c = c.masked_fill(~keep.repeat_interleave(E // G, dim=1), float("-inf"))
    top = c.topk(K, dim=-1)[1]
    w = s.gather(1, top)
    if cfg["norm_topk_prob"]:
        w = w / (w.sum(-1, keepdim=True) + 1e-20)
    w = w * cfg["routed_scaling_factor"]
    out = spec_mlp(W, p + "shared_experts.", x)
    for e in range(E):
        tok, slot = torch.where(top == e)
        if len(tok):
            y = spec_mlp(W, f"{p}experts.{e}.", x[tok]) * w[tok, slot, None]
            out = out.index_add(0, tok, y)
    return out.view(shape)


def spec_layer(cfg, W, i, h):
    p, eps = f"model.layers.{i}.", cfg["rms_norm_eps"]
    h = h + spec_mla(cfg, W, p + "self_attn.", spec_rmsnorm(h, W[p + "input_layernorm.weight"], eps))
    x = spec_rmsnorm(h, W[p + "post_attention_layernorm.weight"], eps)
    dense = i < cfg["first_k_dense_replace"]
    return h + (spec_mlp(W, p + "mlp.", x) if dense else spec_moe(cfg, W, p + "mlp.", x))


def spec_forward(cfg, W, ids):
    eps, L = cfg["rms_norm_eps"], cfg["num_hidden_layers"]
    h = W["model.embed_tokens.weight"][ids]
    for i in range(L):
        h = spec_layer(cfg, W, i, h)
    hidden_last = spec_rmsnorm(h, W["model.norm.weight"], eps)
    logits = hidden_last @ W["lm_head.weight"].T
    out = {"logits": logits, "hidden_last": hidden_last, "loss": ce(logits[:, :-1], ids[:, 1:])}
    D, T = cfg.get("num_nextn_predict_layers", 0), ids.shape[1]
    h_prev, total = h, 0.0
    for k in range(1, D + 1):
        p, n = f"model.layers.{L + k - 1}.", T - k
        e = spec_rmsnorm(W[p + "embed_tokens.weight"][ids[:, k:]], W[p + "enorm.weight"], eps)
        hh = spec_rmsnorm(h_prev[:, :n], W[p + "hnorm.weight"], eps)
        h_k = spec_layer(cfg, W, L + k - 1, torch.cat([e, hh], -1) @ W[p + "eh_proj.weight"].T)
        logits_k = spec_rmsnorm(h_k, W[p + "shared_head.norm.weight"], eps) @ W[p + "shared_head.head.weight"].T
        out[f"mtp{k}.logits"] = logits_k
        out[f"mtp{k}.loss"] = ce(logits_k[:, :-1], ids[:, k + 1:])
        total, h_prev = total + out[f"mtp{k}.loss"], h_k
    if D:
        out["mtp_loss"] = MTP_LAMBDA / D * total
        out["total_loss"] = out["loss"] + out["mtp_loss"]
    return out


def spec_expected(directory):
    cfg = json.load(open(os.path.join(directory, "config.json")))
    W = {n: t.double().requires_grad_(True) for n, t in load_file(os.path.join(directory, "model.safetensors")).items()}
    expected = load_file(os.path.join(directory, "expected.safetensors"))
    out = spec_forward(cfg, W, expected["input_ids"])
    out["loss"].backward()
    got = {"input_ids": expected["input_ids"]}
    got.update({n: t.detach().reshape(-1) if t.dim() == 0 else t.detach() for n, t in out.items()})
    L = cfg["num_hidden_layers"]
    for n, t in W.items():
        mtp = n.startswith("model.layers.") and int(n.split(".")[2]) >= L
        if not mtp and not n.endswith("e_score_correction_bias"):
            got["grad." + n] = t.grad if t.grad is not None else torch.zeros_like(t)
    return expected, got


def spec_check(directory, tol, label):
    expected, got = spec_expected(directory)
    worst = compare(expected, got, label)
    print(f"{label} (spec impl): worst rel L2 " + ", ".join(f"{k} {v:.1e}" for k, v in sorted(worst.items())))
    bad = {k: v for k, v in worst.items() if v > tol}
    if bad:
        raise AssertionError(f"{label}: spec implementation disagrees: {bad}")


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------

def rel_l2(a, b):
    a, b = a.double(), b.double()
    ref = b.norm()
    return float((a - b).norm() / ref) if ref > 0 else float((a - b).norm())


def compare(expected, got, label):
    """Max relative L2 per group of names; every name must be present in both."""
    if set(expected) != set(got):
        raise AssertionError(f"{label}: key sets differ: {sorted(set(expected) ^ set(got))[:10]}")
    worst = {}
    for name in expected:
        if expected[name].dtype == torch.int64:
            assert torch.equal(expected[name], got[name]), name
            continue
        group = "grad" if name.startswith("grad.") else name
        worst[group] = max(worst.get(group, 0.0), rel_l2(got[name], expected[name]))
    return worst


def recompute(directory):
    config = hf_config(json.load(open(os.path.join(directory, "config.json"))))
    model, mtps = build_model(config)
    load_checkpoint(model, mtps, load_file(os.path.join(directory, "model.safetensors")))
    expected = load_file(os.path.join(directory, "expected.safetensors"))
    got = expected_outputs(model, mtps, expected["input_ids"])
    return expected, got, min_routing_margin(model, mtps, expected["input_ids"])


def check_dir(directory, tol, label):
    expected, got, margin = recompute(directory)
    worst = compare(expected, got, label)
    bad = {k: v for k, v in worst.items() if v > tol}
    print(f"{label}: routing margin {margin:.2e}; worst rel L2 "
          + ", ".join(f"{k} {v:.1e}" for k, v in sorted(worst.items())))
    if bad or margin <= ROUTING_MARGIN:
        raise AssertionError(f"{label}: over {tol}: {bad}, margin {margin}")


def self_check():
    """Reproduce the golden tiny (HF 5.17-made) from its weights: proves this generator matches it."""
    check_dir(GOLDEN_TINY, 1e-6, "golden tiny")
    spec_check(GOLDEN_TINY, 1e-6, "golden tiny")
    print("self-check passed")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="write every variant under this directory")
    ap.add_argument("--only", nargs="*", help="variant names (default: all)")
    ap.add_argument("--self-check", action="store_true", help="reproduce the golden tiny data")
    ap.add_argument("--verify", help="reload each variant under this directory and recompute it")
    args = ap.parse_args()
    torch.set_grad_enabled(True)
    names = args.only or list(VARIANTS)
    if args.self_check:
        self_check()
    if args.out:
        for name in names:
            generate(name, VARIANTS[name], args.out)
    if args.verify:
        for name in names:
            check_dir(os.path.join(args.verify, name), 1e-6, name)
            spec_check(os.path.join(args.verify, name), 1e-6, name)
    if not (args.self_check or args.out or args.verify):
        ap.print_help()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
