//! Writing: a [`ModelConfig`] as `deepseek2` GGUF metadata.

use super::ARCH;
use crate::config::{ModelConfig, RopeScaling, ScoringFunc};
use crate::gguf::GgufValue;

fn u32v(x: usize) -> GgufValue {
    GgufValue::U32(x as u32)
}

pub(super) fn metadata(c: &ModelConfig, split: bool, n_mtp: usize) -> Vec<(String, GgufValue)> {
    let k = |s: &str| format!("{ARCH}.{s}");
    let mut m: Vec<(String, GgufValue)> = vec![
        (
            "general.architecture".into(),
            GgufValue::String(ARCH.into()),
        ),
        ("general.quantization_version".into(), GgufValue::U32(2)),
        (k("context_length"), u32v(c.max_position_embeddings)),
        (k("embedding_length"), u32v(c.hidden_size)),
        (k("block_count"), u32v(c.num_hidden_layers + n_mtp)),
        (k("feed_forward_length"), u32v(c.intermediate_size)),
        (k("attention.head_count"), u32v(c.num_attention_heads)),
        (
            k("attention.head_count_kv"),
            u32v(if split { 1 } else { c.num_attention_heads }),
        ),
        (k("rope.freq_base"), GgufValue::F32(c.rope_theta as f32)),
        (
            k("attention.layer_norm_rms_epsilon"),
            GgufValue::F32(c.rms_norm_eps as f32),
        ),
        (k("vocab_size"), u32v(c.vocab_size)),
        (k("attention.kv_lora_rank"), u32v(c.kv_lora_rank)),
        (k("rope.dimension_count"), u32v(c.qk_rope_head_dim)),
    ];
    if let Some(q) = c.q_lora_rank {
        m.push((k("attention.q_lora_rank"), u32v(q)));
    }
    if split {
        m.push((
            k("attention.key_length"),
            u32v(c.kv_lora_rank + c.qk_rope_head_dim),
        ));
        m.push((k("attention.value_length"), u32v(c.kv_lora_rank)));
        m.push((k("attention.key_length_mla"), u32v(c.qk_head_dim())));
        m.push((k("attention.value_length_mla"), u32v(c.v_head_dim)));
    } else {
        m.push((k("attention.key_length"), u32v(c.qk_head_dim())));
        m.push((k("attention.value_length"), u32v(c.v_head_dim)));
    }
    if c.n_routed_experts > 0 {
        m.extend([
            (
                k("leading_dense_block_count"),
                u32v(c.first_k_dense_replace),
            ),
            (k("expert_count"), u32v(c.n_routed_experts)),
            (k("expert_used_count"), u32v(c.num_experts_per_tok)),
            (k("expert_shared_count"), u32v(c.n_shared_experts)),
            (
                k("expert_feed_forward_length"),
                u32v(c.moe_intermediate_size),
            ),
            (
                k("expert_weights_scale"),
                GgufValue::F32(c.routed_scaling_factor as f32),
            ),
            (k("expert_weights_norm"), GgufValue::Bool(c.norm_topk_prob)),
            (
                k("expert_gating_func"),
                GgufValue::U32(match c.scoring_func {
                    ScoringFunc::Softmax => 1,
                    ScoringFunc::Sigmoid => 2,
                }),
            ),
            (k("expert_group_count"), u32v(c.n_group)),
            (k("expert_group_used_count"), u32v(c.topk_group)),
        ]);
    } else {
        // llama.cpp reads these for every deepseek2 file
        m.extend([
            (k("leading_dense_block_count"), u32v(c.num_hidden_layers)),
            (k("expert_feed_forward_length"), u32v(c.intermediate_size)),
            (k("expert_shared_count"), u32v(0)),
            (k("expert_weights_scale"), GgufValue::F32(1.0)),
        ]);
    }
    if let Some(RopeScaling::Yarn(y)) = &c.rope_scaling {
        m.push((k("rope.scaling.type"), GgufValue::String("yarn".into())));
        m.push((k("rope.scaling.factor"), GgufValue::F32(y.factor as f32)));
        m.push((
            k("rope.scaling.original_context_length"),
            u32v(y.original_max_position_embeddings),
        ));
        if let Some(all) = y.mscale_all_dim {
            m.push((
                k("rope.scaling.yarn_log_multiplier"),
                GgufValue::F32((0.1 * all) as f32),
            ));
        }
    }
    if n_mtp > 0 {
        m.push((k("nextn_predict_layers"), u32v(n_mtp)));
    }
    if let Some(b) = c.bos_token_id {
        m.push(("tokenizer.ggml.bos_token_id".into(), GgufValue::U32(b)));
    }
    if let Some(&e) = c.eos_token_ids.first() {
        m.push(("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(e)));
    }
    m
}
