"""Reference-golden generator for DeepRust (DeepSeek-V2/V3 family).

For each tiny random model in MODELS this writes tests/golden/<name>/:
  config.json                      hand-written HF config (the HF reference model is built from the same dict)
  model.safetensors                or model-0000{1..n}-of-0000n.safetensors + model.safetensors.index.json;
                                   official tensor names, storage dtype per model (bf16 / f16+f32 norms /
                                   fp8 e4m3 with 128x128 block `*_scale_inv`), MTP tensors at
                                   model.layers.{num_hidden_layers}.* when num_nextn_predict_layers == 1
  goldens.safetensors              F32/I64 outputs of transformers' eager float32 forward on exactly the values
                                   stored above (rounded to the storage dtype / dequantized):
    prompt.{k}.ids [T] i64, prompt.{k}.logits [T,V], prompt.{k}.residual.{l} [T,H] (output of decoder layer l),
    prompt.{k}.router.{l}.indices [T,top_k] i64 (sorted per row) / .weights [T,top_k] (permuted to match),
    greedy.{g}.prompt_ids [P], greedy.{g}.ids [16], greedy.{g}.step_logits [16,V] (row 0 = prefill logits at the
    last prompt position, row i = logits of the KV-cached decode step that fed ids[i-1]).
  tokenizer.json, tokenizer_config.json, text_goldens.json   (only for models with tokenizer=True) a 320-entry
                                   byte-level BPE trained on TOKENIZER_CORPUS with DeepSeek-V3's pipeline and chat
                                   template (taken from assets/tokenizers/deepseek-v3, see scripts/fetch-tokenizer.sh),
                                   and transformers' prompt ids / 16 greedy ids / decoded text for TEXT_PROMPTS and
                                   TEXT_CHATS (each the first robust candidate; the model sees token ids only).

Robustness: every prompt is re-drawn (new seed) until (a) numpy re-computation of every router decision with
DeepSeek's own semantics agrees with transformers with expert/group margins >= 1e-4, and (b) for greedy cases the
top-1/top-2 logit gap is >= 1e-3 at every step. Everything is seeded, so reruns are bit-identical on one machine.
Run via scripts/reference/run.sh.
"""
import copy
import json
import shutil
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.torch import save_file
from tokenizers import Tokenizer, pre_tokenizers, trainers
from transformers import AutoTokenizer, DeepseekV2Config, DeepseekV2ForCausalLM, DeepseekV3Config, DeepseekV3ForCausalLM

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "golden"
GREEDY_STEPS = 16
FP8_MAX = 448.0
BLOCK = 128
ROUTE_MARGIN = 1e-4
GREEDY_GAP = 1e-3
MAX_ATTEMPTS = 200
DEEPSEEK_TOKENIZER = ROOT / "assets" / "tokenizers" / "deepseek-v3"

# ----------------------------------------------------------------------------------------------------------------
# Configs (hand-written; mirrors the keys of the official DeepSeek config.json files)
V3_YARN_MTP = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "aux_loss_alpha": 0.001,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "ep_size": 1,
    "first_k_dense_replace": 1,
    "hidden_act": "silu",
    "hidden_size": 64,
    "initializer_range": 0.02,
    "intermediate_size": 160,
    "kv_lora_rank": 32,
    "max_position_embeddings": 128,
    "model_type": "deepseek_v3",
    "moe_intermediate_size": 32,
    "moe_layer_freq": 1,
    "n_group": 4,
    "n_routed_experts": 16,
    "n_shared_experts": 1,
    "norm_topk_prob": True,
    "num_attention_heads": 4,
    "num_experts_per_tok": 4,
    "num_hidden_layers": 3,
    "num_key_value_heads": 4,
    "num_nextn_predict_layers": 1,
    "pretraining_tp": 1,
    "q_lora_rank": 48,
    "qk_nope_head_dim": 16,
    "qk_rope_head_dim": 16,
    "rms_norm_eps": 1e-06,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 4.0, "mscale": 1.0, "mscale_all_dim": 1.0,
                     "original_max_position_embeddings": 32, "type": "yarn"},
    "rope_theta": 10000,
    "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid",
    "seq_aux": True,
    "tie_word_embeddings": False,
    "topk_group": 2,
    "topk_method": "noaux_tc",
    "torch_dtype": "bfloat16",
    "transformers_version": transformers.__version__,
    "use_cache": True,
    "v_head_dim": 16,
    "vocab_size": 320,
}

V3_NOLORA_F16 = {
    **V3_YARN_MTP,
    "q_lora_rank": None, "rope_scaling": None, "tie_word_embeddings": True, "num_hidden_layers": 2,
    "n_group": 1, "topk_group": 1, "num_experts_per_tok": 2, "n_routed_experts": 8,
    "num_nextn_predict_layers": 0, "torch_dtype": "float16",
}

V3_FP8_SHARDED = {
    **V3_YARN_MTP,
    "vocab_size": 400, "hidden_size": 200, "intermediate_size": 300, "moe_intermediate_size": 136,
    "num_hidden_layers": 3, "first_k_dense_replace": 1, "n_routed_experts": 8, "n_shared_experts": 1,
    "num_experts_per_tok": 2, "n_group": 2, "topk_group": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
    "q_lora_rank": 136, "kv_lora_rank": 72, "qk_nope_head_dim": 32, "qk_rope_head_dim": 16, "v_head_dim": 32,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 2.0, "mscale": 1.0, "mscale_all_dim": 1.0,
                     "original_max_position_embeddings": 64, "type": "yarn"},
    "max_position_embeddings": 128, "routed_scaling_factor": 2.5, "norm_topk_prob": True,
    "num_nextn_predict_layers": 1, "torch_dtype": "bfloat16",
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                            "weight_block_size": [BLOCK, BLOCK]},
}

V2_SOFTMAX_GROUPED = {  # real V2 configs carry no num_nextn_predict_layers
    "architectures": ["DeepseekV2ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "aux_loss_alpha": 0.001,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "ep_size": 1,
    "first_k_dense_replace": 1,
    "hidden_act": "silu",
    "hidden_size": 64,
    "initializer_range": 0.02,
    "intermediate_size": 160,
    "kv_lora_rank": 32,
    "max_position_embeddings": 128,
    "model_type": "deepseek_v2",
    "moe_intermediate_size": 32,
    "moe_layer_freq": 1,
    "n_group": 4,
    "n_routed_experts": 16,
    "n_shared_experts": 1,
    "norm_topk_prob": False,
    "num_attention_heads": 4,
    "num_experts_per_tok": 3,
    "num_hidden_layers": 3,
    "num_key_value_heads": 4,
    "pretraining_tp": 1,
    "q_lora_rank": 48,
    "qk_nope_head_dim": 16,
    "qk_rope_head_dim": 16,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 10000,
    "routed_scaling_factor": 1.5,
    "scoring_func": "softmax",
    "seq_aux": True,
    "tie_word_embeddings": False,
    "topk_group": 2,
    "topk_method": "group_limited_greedy",
    "torch_dtype": "bfloat16",
    "transformers_version": transformers.__version__,
    "use_cache": True,
    "v_head_dim": 16,
    "vocab_size": 320,
}

# V2-Lite's shape: no q low-rank, plain greedy top-k over all experts, two shared experts.
V2_LITE_GREEDY = dict(
    V2_SOFTMAX_GROUPED,
    q_lora_rank=None,
    topk_method="greedy",
    n_group=1,
    topk_group=1,
    n_routed_experts=8,
    num_experts_per_tok=3,
    n_shared_experts=2,
    routed_scaling_factor=1.0,
    num_hidden_layers=2,
)

# storage: "bf16" (all bf16), "f16" (f16, norms f32), "fp8" (block fp8 linears, rest bf16).
# e_score_correction_bias is always f32.
MODELS = [
    dict(name="v3_yarn_mtp", config=V3_YARN_MTP, storage="bf16", shards=1, seed=1,
         prompts=[1, 6, 40, 100], greedy=[5, 45], tokenizer=True),
    dict(name="v3_nolora_f16", config=V3_NOLORA_F16, storage="f16", shards=1, seed=2,
         prompts=[1, 9, 50], greedy=[3, 20]),
    dict(name="v3_fp8_sharded", config=V3_FP8_SHARDED, storage="fp8", shards=3, seed=3,
         prompts=[1, 8, 70], greedy=[4, 66]),
    dict(name="v2_softmax_grouped", config=V2_SOFTMAX_GROUPED, storage="bf16", shards=1, seed=4,
         prompts=[1, 7, 60], greedy=[4, 30]),
    dict(name="v2_lite_greedy", config=V2_LITE_GREEDY, storage="bf16", shards=1, seed=5,
         prompts=[1, 11, 45], greedy=[6, 25]),
]


def is_v3(cfg):
    return cfg["model_type"] == "deepseek_v3"


def moe_layers(cfg):
    return [l for l in range(cfg["num_hidden_layers"]) if l >= cfg["first_k_dense_replace"]]


# ----------------------------------------------------------------------------------------------------------------
# Random weights: name -> (f32 tensor, kind); kind decides init and storage dtype.
def init_weights(cfg, gen):
    H, V = cfg["hidden_size"], cfg["vocab_size"]
    nh, dn, dr, dv = (cfg["num_attention_heads"], cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"],
                      cfg["v_head_dim"])
    w = {}

    def randn(*shape, std=1.0, mean=0.0):
        return torch.randn(*shape, generator=gen, dtype=torch.float32) * std + mean

    def linear(name, out_f, in_f):
        w[name] = (randn(out_f, in_f, std=in_f ** -0.5), "linear")

    def norm(name, n):
        w[name] = (randn(n, std=0.1, mean=1.0), "norm")

    def mlp(p, inter):
        linear(f"{p}.gate_proj.weight", inter, H)
        linear(f"{p}.up_proj.weight", inter, H)
        linear(f"{p}.down_proj.weight", H, inter)

    def decoder_layer(p, moe):
        a = f"{p}.self_attn"
        if cfg["q_lora_rank"] is None:
            linear(f"{a}.q_proj.weight", nh * (dn + dr), H)
        else:
            linear(f"{a}.q_a_proj.weight", cfg["q_lora_rank"], H)
            norm(f"{a}.q_a_layernorm.weight", cfg["q_lora_rank"])
            linear(f"{a}.q_b_proj.weight", nh * (dn + dr), cfg["q_lora_rank"])
        linear(f"{a}.kv_a_proj_with_mqa.weight", cfg["kv_lora_rank"] + dr, H)
        norm(f"{a}.kv_a_layernorm.weight", cfg["kv_lora_rank"])
        linear(f"{a}.kv_b_proj.weight", nh * (dn + dv), cfg["kv_lora_rank"])
        linear(f"{a}.o_proj.weight", H, nh * dv)
        if moe:
            E = cfg["n_routed_experts"]
            w[f"{p}.mlp.gate.weight"] = (randn(E, H, std=2.0 * H ** -0.5), "router")
            if is_v3(cfg):
                w[f"{p}.mlp.gate.e_score_correction_bias"] = (randn(E, std=0.1), "bias")
            for e in range(E):
                mlp(f"{p}.mlp.experts.{e}", cfg["moe_intermediate_size"])
            mlp(f"{p}.mlp.shared_experts", cfg["moe_intermediate_size"] * cfg["n_shared_experts"])
        else:
            mlp(f"{p}.mlp", cfg["intermediate_size"])
        norm(f"{p}.input_layernorm.weight", H)
        norm(f"{p}.post_attention_layernorm.weight", H)

    w["model.embed_tokens.weight"] = (randn(V, H), "embed")
    for l in range(cfg["num_hidden_layers"]):
        decoder_layer(f"model.layers.{l}", l >= cfg["first_k_dense_replace"])
    norm("model.norm.weight", H)
    if not cfg["tie_word_embeddings"]:
        w["lm_head.weight"] = (randn(V, H, std=2.0 * H ** -0.5), "head")
    if cfg.get("num_nextn_predict_layers", 0) == 1:  # MTP module (ignored by transformers)
        p = f"model.layers.{cfg['num_hidden_layers']}"
        w[f"{p}.embed_tokens.weight"] = (randn(V, H), "embed")
        norm(f"{p}.enorm.weight", H)
        norm(f"{p}.hnorm.weight", H)
        linear(f"{p}.eh_proj.weight", H, 2 * H)
        decoder_layer(p, moe=True)
        norm(f"{p}.shared_head.norm.weight", H)
        w[f"{p}.shared_head.head.weight"] = (randn(V, H, std=2.0 * H ** -0.5), "head")
    return w


def quantize_fp8(w):
    """128x128 block fp8: returns (fp8 [out,in], scale_inv f32 [ceil(out/128), ceil(in/128)], dequantized f32)."""
    out_f, in_f = w.shape
    nb_o, nb_i = -(-out_f // BLOCK), -(-in_f // BLOCK)
    q = torch.empty(out_f, in_f, dtype=torch.float8_e4m3fn)
    scale = torch.empty(nb_o, nb_i, dtype=torch.float32)
    deq = torch.empty(out_f, in_f, dtype=torch.float32)
    for bo in range(nb_o):
        for bi in range(nb_i):
            rows = slice(bo * BLOCK, min((bo + 1) * BLOCK, out_f))  # edge blocks may be partial
            cols = slice(bi * BLOCK, min((bi + 1) * BLOCK, in_f))
            blk = w[rows, cols]
            s = blk.abs().max().clamp_min(1e-12) / FP8_MAX
            qb = (blk / s).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
            q[rows, cols], scale[bo, bi] = qb, s
            deq[rows, cols] = qb.to(torch.float32) * s
    return q, scale, deq


def to_storage(weights, storage):
    """-> (tensors to write, f32 reference values for every stored weight name)."""
    stored, ref = {}, {}
    for name, (t, kind) in weights.items():
        if kind == "bias":
            stored[name] = t.clone()
        elif storage == "fp8" and kind == "linear":
            q, s, deq = quantize_fp8(t)
            stored[name], stored[name + "_scale_inv"] = q, s
            ref[name] = deq
            continue
        elif storage == "f16":
            stored[name] = t.clone() if kind == "norm" else t.to(torch.float16)
        else:
            stored[name] = t.to(torch.bfloat16)
        ref[name] = stored[name].to(torch.float32)
    return stored, ref


def write_weights(out_dir, stored, n_shards):
    if n_shards == 1:
        save_file(stored, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
        return
    names = list(stored)
    sizes = [stored[n].numel() * stored[n].element_size() for n in names]
    total, acc, shard_of = sum(sizes), 0, {}
    for n, sz in zip(names, sizes):  # contiguous, roughly equal-byte shards
        shard_of[n] = min(int(acc * n_shards / total), n_shards - 1)
        acc += sz
    files = [f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors" for i in range(n_shards)]
    for i, f in enumerate(files):
        part = {n: stored[n] for n in names if shard_of[n] == i}
        save_file(part, str(out_dir / f), metadata={"format": "pt"})
    index = {"metadata": {"total_size": total}, "weight_map": {n: files[shard_of[n]] for n in sorted(names)}}
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


# ----------------------------------------------------------------------------------------------------------------
# HF reference model + hooks
def build_hf(cfg, ref, out_dir):
    v3 = is_v3(cfg)
    cfg_cls, model_cls = (DeepseekV3Config, DeepseekV3ForCausalLM) if v3 else (DeepseekV2Config, DeepseekV2ForCausalLM)
    hf_cfg = cfg_cls.from_dict(copy.deepcopy(cfg))  # V3 config mutates rope_scaling in place
    hf_cfg._attn_implementation = "eager"
    model = model_cls(hf_cfg).float().eval()
    n = cfg["num_hidden_layers"]
    sd = {k: v for k, v in ref.items() if not k.startswith(f"model.layers.{n}.")}  # drop MTP
    missing, unexpected = model.load_state_dict(sd, strict=False)
    allowed_missing = {"lm_head.weight"} if cfg["tie_word_embeddings"] else set()
    assert set(missing) <= allowed_missing and not unexpected, (missing, unexpected)
    notes = {}
    if cfg["tie_word_embeddings"]:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), "lm_head not tied"
        notes["tied_lm_head"] = "lm_head shares embed_tokens storage"
    if "quantization_config" not in cfg:  # cross-check the files on disk through from_pretrained
        loaded, info = model_cls.from_pretrained(out_dir, dtype=torch.float32, attn_implementation="eager",
                                                 output_loading_info=True)
        msd, lsd = model.state_dict(), loaded.state_dict()
        assert msd.keys() == lsd.keys()
        for k in msd:
            assert torch.equal(msd[k], lsd[k]), f"from_pretrained mismatch on {k}"
        notes["from_pretrained"] = {k: len(v) for k, v in info.items() if hasattr(v, "__len__")}
    return model, notes


class Recorder:
    """Captures decoder-layer outputs and, per MoE layer, the gate input and the gate's (indices, weights)."""

    def __init__(self, model, cfg):
        self.layers = {}
        self.gate_in, self.gate_out = {}, {}
        for l, layer in enumerate(model.model.layers):
            layer.register_forward_hook(self._layer_hook(l))
            if l in moe_layers(cfg):
                layer.mlp.gate.register_forward_pre_hook(self._gate_pre(l))
                layer.mlp.gate.register_forward_hook(self._gate_post(l))

    def _layer_hook(self, l):
        def hook(_m, _args, out):
            self.layers[l] = (out[0] if isinstance(out, tuple) else out).detach()[0].clone()
        return hook

    def _gate_pre(self, l):
        def hook(_m, args):
            self.gate_in[l] = args[0].detach().reshape(-1, args[0].shape[-1]).clone()
        return hook

    def _gate_post(self, l):
        def hook(_m, _args, out):
            self.gate_out[l] = (out[0].detach().clone(), out[1].detach().clone())
        return hook


def reference_routing(cfg, x, weight, bias):
    """DeepSeek routing in float64 numpy. Returns (sorted indices [T,K], weights [T,K], min margin)."""
    E, G, TG, K = cfg["n_routed_experts"], cfg["n_group"], cfg["topk_group"], cfg["num_experts_per_tok"]
    logits = x.astype(np.float64) @ weight.astype(np.float64).T
    T = logits.shape[0]
    if cfg["scoring_func"] == "sigmoid":
        scores = 1.0 / (1.0 + np.exp(-logits))
        choice = scores + bias.astype(np.float64)  # noaux_tc: bias only affects selection
        group = np.sort(choice.reshape(T, G, E // G), axis=-1)[..., -2:].sum(-1)
    else:
        scores = np.exp(logits - logits.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        choice = scores
        group = choice.reshape(T, G, E // G).max(-1)  # group_limited_greedy
    margins = [np.inf]
    g_sorted = -np.sort(-group, axis=-1)
    if TG < G:
        margins.append((g_sorted[:, TG - 1] - g_sorted[:, TG]).min())
    kept = np.argsort(-group, axis=-1, kind="stable")[:, :TG]
    gmask = np.zeros((T, G), bool)
    np.put_along_axis(gmask, kept, True, axis=-1)
    masked = np.where(np.repeat(gmask, E // G, axis=-1), choice, -np.inf)
    m_sorted = -np.sort(-masked, axis=-1)
    if K < E:
        margins.append((m_sorted[:, K - 1] - m_sorted[:, K]).min())
    if TG < G:  # transformers masks dropped groups with 0.0 (not -inf): chosen scores must stay above 0
        margins.append(m_sorted[:, K - 1].min())
    idx = np.sort(np.argsort(-masked, axis=-1, kind="stable")[:, :K], axis=-1)
    w = np.take_along_axis(scores, idx, axis=-1)
    if cfg["scoring_func"] == "sigmoid" and cfg["norm_topk_prob"]:  # transformers' V2 ignores norm_topk_prob
        w = w / (w.sum(-1, keepdims=True) + 1e-20)
    return idx, w * cfg["routed_scaling_factor"], float(min(margins))


def check_routing(cfg, model, rec):
    """Compare every recorded gate decision with numpy; return (ok, sorted HF routing per layer)."""
    routing = {}
    for l in moe_layers(cfg):
        gate = model.model.layers[l].mlp.gate
        bias = gate.e_score_correction_bias.numpy() if is_v3(cfg) else 0.0
        idx_np, w_np, margin = reference_routing(cfg, rec.gate_in[l].numpy(), gate.weight.detach().numpy(), bias)
        hf_idx, hf_w = rec.gate_out[l]
        order = torch.argsort(hf_idx, dim=-1)
        hf_idx, hf_w = torch.gather(hf_idx, -1, order), torch.gather(hf_w, -1, order)
        if margin < ROUTE_MARGIN or not np.array_equal(hf_idx.numpy(), idx_np):
            return False, None
        assert np.allclose(hf_w.numpy(), w_np, rtol=1e-5, atol=1e-6), f"router weights differ in layer {l}"
        routing[l] = (hf_idx.to(torch.int64), hf_w.to(torch.float32))
    return True, routing


def draw_ids(cfg, seed, tag, k, attempt, length):
    rng = np.random.default_rng([seed, tag, k, attempt])
    return torch.from_numpy(rng.integers(0, cfg["vocab_size"], size=length)).to(torch.int64)


@torch.no_grad()
def prompt_goldens(cfg, model, rec, spec):
    out, attempts = {}, []
    for k, length in enumerate(spec["prompts"]):
        for attempt in range(MAX_ATTEMPTS):
            ids = draw_ids(cfg, spec["seed"], 0, k, attempt, length)
            logits = model(input_ids=ids[None], use_cache=False).logits[0]
            ok, routing = check_routing(cfg, model, rec)
            if ok:
                break
        else:
            raise RuntimeError(f"{spec['name']}: no robust prompt of length {length}")
        attempts.append(attempt)
        out[f"prompt.{k}.ids"] = ids
        out[f"prompt.{k}.logits"] = logits.float().contiguous()
        for l in range(cfg["num_hidden_layers"]):
            out[f"prompt.{k}.residual.{l}"] = rec.layers[l].float().contiguous()
        for l, (idx, w) in routing.items():
            out[f"prompt.{k}.router.{l}.indices"] = idx.contiguous()
            out[f"prompt.{k}.router.{l}.weights"] = w.contiguous()
    return out, attempts


def top2_gap(row):
    top = torch.topk(row, 2).values
    return float(top[0] - top[1])


@torch.no_grad()
def greedy_once(cfg, model, rec, prompt):
    """Manual KV-cached greedy loop. Returns (ids, step_logits) or None if a robustness check fails."""
    out = model(input_ids=prompt[None], use_cache=True)
    rows, ids = [out.logits[0, -1].float()], []
    past = out.past_key_values
    for i in range(GREEDY_STEPS):
        ok, _ = check_routing(cfg, model, rec)
        if not ok or top2_gap(rows[i]) < GREEDY_GAP:
            return None
        ids.append(int(torch.argmax(rows[i])))
        if i + 1 < GREEDY_STEPS:
            out = model(input_ids=torch.tensor([[ids[-1]]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            rows.append(out.logits[0, -1].float())
    return torch.tensor(ids, dtype=torch.int64), torch.stack(rows)


@torch.no_grad()
def greedy_goldens(cfg, model, rec, spec):
    out, attempts, max_diff = {}, [], 0.0
    for g, length in enumerate(spec["greedy"]):
        for attempt in range(MAX_ATTEMPTS):
            prompt = draw_ids(cfg, spec["seed"], 1, g, attempt, length)
            res = greedy_once(cfg, model, rec, prompt)
            if res is not None:
                break
        else:
            raise RuntimeError(f"{spec['name']}: no robust greedy prompt of length {length}")
        ids, step_logits = res
        # KV-cache consistency: one uncached forward over prompt + ids[:-1] must give the same logits.
        full = model(input_ids=torch.cat([prompt, ids[:-1]])[None], use_cache=False).logits[0, length - 1:]
        diff = float((full - step_logits).abs().max())
        assert diff < 1e-3, f"cached vs uncached logits differ by {diff}"
        max_diff = max(max_diff, diff)
        attempts.append(attempt)
        out[f"greedy.{g}.prompt_ids"] = prompt
        out[f"greedy.{g}.ids"] = ids
        out[f"greedy.{g}.step_logits"] = step_logits.contiguous()
    return out, attempts, max_diff


# ----------------------------------------------------------------------------------------------------------------
# Tiny tokenizer + text goldens. Special tokens take ids 0.. (0 = BOS, 1 = EOS, matching the configs), then the
# 256-symbol byte-level alphabet, then merges learned from TOKENIZER_CORPUS up to vocab_size.
TOKENIZER_SPECIALS = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<think>",
                      "</think>"]
TOKENIZER_CORPUS = [
    "Once upon a time there was a small robot who lived in a quiet town by the sea. Every morning the robot "
    "walked to the harbor, counted the boats, and wrote the number in a little book. On Monday there were "
    "12 boats; on Tuesday there were 15. The robot liked numbers, but it liked the sea even more.",
    "The town had a baker, a teacher and an old fisherman. The baker made bread before the sun came up, the "
    "teacher told the children stories about the stars, and the fisherman mended his nets while he sang. "
    "They all said hello to the robot, and the robot always said hello back.",
    "One day a storm came over the water. The wind was loud, the rain was cold, and the boats could not find "
    "the way home. The robot climbed the hill, turned on its bright lamp and held it high for the whole night. "
    "In the morning all 15 boats were safe in the harbor, and the town thanked the robot again and again.",
    "What did the robot learn? It learned that a light in the dark can help many people at once. It also "
    "learned that friends are not counted like boats: you keep them, you help them, and they help you.",
]
# Candidates per golden; the first whose greedy run passes the robustness checks is used.
TEXT_PROMPTS = [
    ["Once upon a time", "Once upon a time there was", "Once upon a time, in a town"],
    ["On Monday, 12 boats came in; by 9:30 there were 15!", "In 2024 the robot counted 1,234 boats (wow).",
     "Call 555-0100 at 7:45, or else!"],
    ["The robot said 你好 🤖", "Hello 世界 😀!", "A lamp 灯 and a star ⭐"],
]
TEXT_CHATS = [
    [[{"role": "user", "content": "Tell me a story about the sea."}],
     [{"role": "user", "content": "Who lived in the town?"}],
     [{"role": "user", "content": "What did the robot count?"}]],
    [[{"role": "system", "content": "You are a kind robot."},
      {"role": "user", "content": "Hello!"},
      {"role": "assistant", "content": "Hello back."},
      {"role": "user", "content": "How many boats?"}],
     [{"role": "system", "content": "Be brief."},
      {"role": "user", "content": "Hi"},
      {"role": "assistant", "content": "Hello."},
      {"role": "user", "content": "What came over the water?"}]],
]


def write_tokenizer(cfg, out_dir):
    """Byte-level BPE with DeepSeek-V3's normalizer / pre-tokenizer / post-processor / decoder and chat template."""
    ds = json.loads((DEEPSEEK_TOKENIZER / "tokenizer.json").read_text(encoding="utf-8"))
    ds_cfg = json.loads((DEEPSEEK_TOKENIZER / "tokenizer_config.json").read_text(encoding="utf-8"))
    skeleton = dict(ds, added_tokens=[], model={"type": "BPE", "vocab": {}, "merges": []})
    tok = Tokenizer.from_str(json.dumps(skeleton))
    trainer = trainers.BpeTrainer(vocab_size=cfg["vocab_size"], special_tokens=TOKENIZER_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TOKENIZER_CORPUS, trainer)
    n_special = len(TOKENIZER_SPECIALS)
    assert tok.get_vocab_size(with_added_tokens=True) == cfg["vocab_size"], tok.get_vocab_size()
    assert [tok.token_to_id(t) for t in TOKENIZER_SPECIALS] == list(range(n_special))
    assert {tok.id_to_token(i) for i in range(n_special, n_special + 256)} == set(pre_tokenizers.ByteLevel.alphabet())
    tok.save(str(out_dir / "tokenizer.json"))
    tok_cfg = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": TOKENIZER_SPECIALS[0],
        "eos_token": TOKENIZER_SPECIALS[1],
        "pad_token": TOKENIZER_SPECIALS[1],
        "unk_token": None,  # else transformers would add "<unk>" as id 320
        "clean_up_tokenization_spaces": False,
        "legacy": True,
        "model_max_length": cfg["max_position_embeddings"],
        "tokenizer_class": "LlamaTokenizerFast",
        "chat_template": ds_cfg["chat_template"],
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2, ensure_ascii=False) + "\n",
                                                   encoding="utf-8")


@torch.no_grad()
def text_goldens(cfg, model, rec, out_dir):
    """Prompt ids as HF feeds them (BOS via the tokenizer / chat template) and 16 greedy ids + decoded text."""
    tok = AutoTokenizer.from_pretrained(out_dir)
    assert len(tok) == cfg["vocab_size"] and (tok.bos_token_id, tok.eos_token_id) == (0, 1), (len(tok), tok)
    out = []
    for key, candidates in [("prompt", c) for c in TEXT_PROMPTS] + [("messages", c) for c in TEXT_CHATS]:
        for cand in candidates:  # plain prompts: tokenizer defaults (BOS); chats: the template's own BOS
            if key == "prompt":
                ids = tok(cand)["input_ids"]
            else:
                ids = tok.apply_chat_template(cand, add_generation_prompt=True)
            res = greedy_once(cfg, model, rec, torch.tensor(ids, dtype=torch.int64))
            if res is not None:
                break
        else:
            raise RuntimeError(f"no robust candidate among {candidates}")
        greedy = res[0].tolist()
        out.append({key: cand, "prompt_ids": list(ids), "greedy_ids": greedy,
                    "greedy_text": tok.decode(greedy, skip_special_tokens=True)})
    doc = {"generator": "scripts/reference/generate.py", "transformers": transformers.__version__,
           "tokenizer_class": type(tok).__name__, "greedy_steps": GREEDY_STEPS, "cases": out}
    (out_dir / "text_goldens.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------------------------------------
def generate(spec):
    cfg = spec["config"]
    out_dir = OUT / spec["name"]
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")

    torch.manual_seed(spec["seed"])
    gen = torch.Generator().manual_seed(spec["seed"])
    stored, ref = to_storage(init_weights(cfg, gen), spec["storage"])
    write_weights(out_dir, stored, spec["shards"])

    model, notes = build_hf(cfg, ref, out_dir)
    rec = Recorder(model, cfg)
    goldens, p_attempts = prompt_goldens(cfg, model, rec, spec)
    greedy, g_attempts, max_diff = greedy_goldens(cfg, model, rec, spec)
    goldens.update(greedy)
    if spec.get("tokenizer"):
        write_tokenizer(cfg, out_dir)
        text_goldens(cfg, model, rec, out_dir)
    meta = {
        "generator": "scripts/reference/generate.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "reference": "transformers eager attention, float32, weights = stored values upcast/dequantized to f32",
        "prompt_lengths": spec["prompts"],
        "greedy_prompt_lengths": spec["greedy"],
        "greedy_steps": GREEDY_STEPS,
        "moe_layers": moe_layers(cfg),
    }
    save_file(goldens, str(out_dir / "goldens.safetensors"), metadata={"description": json.dumps(meta)})
    files = {f.name: f.stat().st_size for f in sorted(out_dir.iterdir())}
    print(f"{spec['name']}: prompt redraws {p_attempts}, greedy redraws {g_attempts}, "
          f"cache-vs-full max |dlogit| {max_diff:.2e}, {notes}")
    for f, size in files.items():
        print(f"  {f:45s} {size:>9d}")
    return sum(files.values())


def main():
    torch.set_default_dtype(torch.float32)
    torch.set_num_threads(1)  # deterministic reduction order
    transformers.logging.set_verbosity_error()
    total = sum(generate(spec) for spec in MODELS)
    print(f"total {total} bytes")


if __name__ == "__main__":
    main()
