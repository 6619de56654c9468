//! `deeprust info`: what a checkpoint is, from its config and tensor headers (no forward).

use std::collections::BTreeMap;

use anyhow::Result;
use clap::Args;
use loader::RopeScaling;

use crate::common::ModelArgs;

#[derive(Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: &InfoArgs) -> Result<()> {
    let ckpt = a.model.checkpoint()?;
    // Validate every tensor binding, so `info` fails on the same bad files a run would.
    model::Model::load_with(&ckpt, a.model.backend()?)?;
    let c = &ckpt.config;
    let mtp_prefixes: Vec<String> = (0..c.num_nextn_predict_layers)
        .map(|k| format!("model.layers.{}.", c.num_hidden_layers + k))
        .collect();

    let (mut total, mut mtp, mut routed) = (0u64, 0u64, 0u64);
    let mut dtypes: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for t in ckpt.tensors() {
        let e = dtypes.entry(t.dtype.to_string()).or_default();
        e.0 += 1;
        e.1 += t.bytes().len() as u64;
        if t.name.ends_with("_scale_inv") || t.name.ends_with("e_score_correction_bias") {
            continue; // quantization scales and router bias are not parameters of the product
        }
        let n = t.numel() as u64;
        if mtp_prefixes.iter().any(|p| t.name.starts_with(p)) {
            mtp += n;
        } else {
            total += n;
            if t.name.contains(".mlp.experts.") {
                routed += n;
            }
        }
    }
    let active = if c.n_routed_experts > 0 {
        total - routed + routed * c.num_experts_per_tok as u64 / c.n_routed_experts as u64
    } else {
        total
    };
    let kv_values = c.kv_values_per_token_per_layer() * c.num_hidden_layers;
    let moe_layers = (0..c.num_hidden_layers)
        .filter(|&i| c.is_moe_layer(i))
        .count();
    let rope = match &c.rope_scaling {
        None => "plain".to_string(),
        Some(RopeScaling::Yarn(y)) => format!(
            "yarn (factor {}, original context {})",
            y.factor, y.original_max_position_embeddings
        ),
    };

    if a.json {
        let j = serde_json::json!({
            "model_type": c.model_type,
            "layers": c.num_hidden_layers,
            "dense_layers": c.num_hidden_layers - moe_layers,
            "moe_layers": moe_layers,
            "hidden_size": c.hidden_size,
            "vocab_size": c.vocab_size,
            "attention_heads": c.num_attention_heads,
            "q_lora_rank": c.q_lora_rank,
            "kv_lora_rank": c.kv_lora_rank,
            "routed_experts": c.n_routed_experts,
            "shared_experts": c.n_shared_experts,
            "experts_per_token": c.num_experts_per_tok,
            "mtp_modules": c.num_nextn_predict_layers,
            "parameters_total": total,
            "parameters_active_per_token": active,
            "parameters_mtp": mtp,
            "weight_dtypes": dtypes.iter().map(|(k, (n, b))| (k.clone(), serde_json::json!({"tensors": n, "bytes": b}))).collect::<serde_json::Map<_, _>>(),
            "kv_cache_values_per_token": kv_values,
            "kv_cache_bytes_per_token_f32": kv_values * 4,
            "kv_cache_bytes_per_token_bf16": kv_values * 2,
        });
        println!("{j}");
        return Ok(());
    }
    println!("model          {} ({})", ckpt.dir.display(), c.model_type);
    println!(
        "layers         {} ({} dense, {} MoE), hidden {}, vocab {}",
        c.num_hidden_layers,
        c.num_hidden_layers - moe_layers,
        moe_layers,
        c.hidden_size,
        c.vocab_size
    );
    println!(
        "attention      MLA, {} heads, q_lora_rank {}, kv_lora_rank {}, qk {}+{} (nope+rope), v {}; rope {}",
        c.num_attention_heads,
        c.q_lora_rank.map_or("none".into(), |r| r.to_string()),
        c.kv_lora_rank,
        c.qk_nope_head_dim,
        c.qk_rope_head_dim,
        c.v_head_dim,
        rope
    );
    if c.n_routed_experts > 0 {
        println!(
            "moe            {} routed ({} per token, {:?} {:?}, {} groups, top {}) + {} shared, width {}",
            c.n_routed_experts,
            c.num_experts_per_tok,
            c.scoring_func,
            c.topk_method,
            c.n_group,
            c.topk_group,
            c.n_shared_experts,
            c.moe_intermediate_size
        );
    }
    println!("mtp modules    {}", c.num_nextn_predict_layers);
    println!(
        "parameters     {} total, {} active per token",
        human(total),
        human(active)
    );
    if mtp > 0 {
        println!("               + {} in the MTP module(s)", human(mtp));
    }
    for (d, (n, b)) in &dtypes {
        println!("dtype {d:<8} {n} tensors, {}", bytes(*b));
    }
    println!(
        "kv cache       {kv_values} values per token ({} as f32, {} as bf16)",
        bytes(kv_values as u64 * 4),
        bytes(kv_values as u64 * 2)
    );
    let (level, threads) = a.model.kernel_choice()?;
    println!(
        "kernels        {} on {} threads (cpu: {})",
        level,
        threads,
        kernels::cpu_features().join(" ")
    );
    Ok(())
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B ({n})", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2}M ({n})", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K ({n})", n as f64 / 1e3),
        n => n.to_string(),
    }
}

fn bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}
