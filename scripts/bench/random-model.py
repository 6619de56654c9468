"""Write a random mid-size checkpoint of the DeepSeek-V3 architecture (bf16, official tensor
names) for benchmarks: `python3 scripts/bench/random-model.py OUT_DIR [--hidden 768 ...]`.
Needs only numpy. Nothing it writes is committed. `--tokenizer DIR` copies a tokenizer
(tokenizer.json, tokenizer_config.json) next to the weights, as converters such as llama.cpp's
convert_hf_to_gguf.py need one; scripts/bench/peer.sh uses it with the real V3 tokenizer."""
import argparse
import json
import shutil
import struct
from pathlib import Path

import numpy as np


def bf16(a: np.ndarray) -> bytes:
    return (a.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--experts", type=int, default=32)
    ap.add_argument("--active", type=int, default=2)
    ap.add_argument("--moe-inter", type=int, default=384)
    ap.add_argument("--vocab", type=int, default=16384)
    ap.add_argument("--heads", type=int, default=None, help="attention heads (default hidden // 96)")
    ap.add_argument("--q-lora", type=int, default=None, help="q_lora_rank (default hidden // 2)")
    ap.add_argument("--kv-lora", type=int, default=None, help="kv_lora_rank (default hidden // 3)")
    ap.add_argument("--n-group", type=int, default=4)
    ap.add_argument("--topk-group", type=int, default=2)
    ap.add_argument("--max-pos", type=int, default=4096, help="max_position_embeddings")
    ap.add_argument("--yarn", action="store_true", help="DeepSeek-V3's own YaRN rope_scaling (factor 40 over 4096)")
    ap.add_argument("--tokenizer", type=Path, default=None, help="directory whose tokenizer files are copied into OUT_DIR")
    a = ap.parse_args()
    d = a.hidden
    heads = a.heads or d // 96
    q_lora = a.q_lora or d // 2
    kv_lora = a.kv_lora or d // 3
    assert a.experts % a.n_group == 0 and a.topk_group <= a.n_group
    yarn = {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096, "beta_fast": 32,
            "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0} if a.yarn else None
    cfg = {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
        "vocab_size": a.vocab, "hidden_size": d, "intermediate_size": 4 * d, "moe_intermediate_size": a.moe_inter,
        "num_hidden_layers": a.layers, "first_k_dense_replace": 1, "moe_layer_freq": 1,
        "num_attention_heads": heads, "num_key_value_heads": heads, "q_lora_rank": q_lora, "kv_lora_rank": kv_lora,
        "qk_nope_head_dim": 64, "qk_rope_head_dim": 32, "v_head_dim": 64,
        "n_routed_experts": a.experts, "n_shared_experts": 1, "num_experts_per_tok": a.active,
        "n_group": a.n_group, "topk_group": a.topk_group, "topk_method": "noaux_tc", "scoring_func": "sigmoid",
        "norm_topk_prob": True, "routed_scaling_factor": 2.5, "num_nextn_predict_layers": 0,
        "max_position_embeddings": a.max_pos, "rope_theta": 10000.0, "rope_scaling": yarn, "rms_norm_eps": 1e-6,
        "hidden_act": "silu", "attention_bias": False, "tie_word_embeddings": False,
        "bos_token_id": 0, "eos_token_id": 1, "torch_dtype": "bfloat16",
    }
    rng = np.random.default_rng(0)
    tensors = {}

    def lin(name, out_f, in_f):
        tensors[name] = ("BF16", [out_f, in_f], bf16(rng.standard_normal((out_f, in_f), dtype=np.float32) / np.sqrt(in_f)))

    def norm(name, n):
        tensors[name] = ("BF16", [n], bf16(np.ones(n, dtype=np.float32)))

    def mlp(p, inter):
        lin(f"{p}.gate_proj.weight", inter, d)
        lin(f"{p}.up_proj.weight", inter, d)
        lin(f"{p}.down_proj.weight", d, inter)

    qk = 64 + 32
    tensors["model.embed_tokens.weight"] = ("BF16", [a.vocab, d], bf16(rng.standard_normal((a.vocab, d), dtype=np.float32)))
    for i in range(a.layers):
        p = f"model.layers.{i}"
        lin(f"{p}.self_attn.q_a_proj.weight", q_lora, d)
        norm(f"{p}.self_attn.q_a_layernorm.weight", q_lora)
        lin(f"{p}.self_attn.q_b_proj.weight", heads * qk, q_lora)
        lin(f"{p}.self_attn.kv_a_proj_with_mqa.weight", kv_lora + 32, d)
        norm(f"{p}.self_attn.kv_a_layernorm.weight", kv_lora)
        lin(f"{p}.self_attn.kv_b_proj.weight", heads * 128, kv_lora)
        lin(f"{p}.self_attn.o_proj.weight", d, heads * 64)
        norm(f"{p}.input_layernorm.weight", d)
        norm(f"{p}.post_attention_layernorm.weight", d)
        if i == 0:
            mlp(f"{p}.mlp", 4 * d)
        else:
            lin(f"{p}.mlp.gate.weight", a.experts, d)
            tensors[f"{p}.mlp.gate.e_score_correction_bias"] = ("F32", [a.experts], (rng.standard_normal(a.experts).astype(np.float32) * 0.1).tobytes())
            for e in range(a.experts):
                mlp(f"{p}.mlp.experts.{e}", a.moe_inter)
            mlp(f"{p}.mlp.shared_experts", a.moe_inter)
    norm("model.norm.weight", d)
    lin("lm_head.weight", a.vocab, d)

    header, off = {}, 0
    for k, (dt, shape, data) in tensors.items():
        header[k] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
    h = json.dumps(header).encode()
    h += b" " * (-(8 + len(h)) % 8)
    a.out.mkdir(parents=True, exist_ok=True)
    with open(a.out / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _, _, data in tensors.values():
            f.write(data)
    (a.out / "config.json").write_text(json.dumps(cfg, indent=1))
    if a.tokenizer is not None:
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model"):
            if (a.tokenizer / name).exists():
                shutil.copy(a.tokenizer / name, a.out / name)
    n = sum(int(np.prod(s)) for _, s, _ in tensors.values())
    print(f"{a.out}: {n / 1e6:.0f}M parameters, {off / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
