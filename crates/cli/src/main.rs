//! `deeprust`: the command-line face of the engine.

mod bench;
mod bench_single;
mod chat;
mod common;
mod generate;
mod gguf_meta;
mod info;
mod kl;
mod probe;
mod quantize;
mod serve;
mod tokenize;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "deeprust",
    version,
    about = "DeepSeek-V3 family inference in Rust"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Architecture summary, parameter counts, weight dtypes and KV-cache size of a checkpoint.
    Info(info::InfoArgs),
    /// Run one prefill from position 0 and write the logits ([T, vocab], f32) to a safetensors file.
    Logits(generate::LogitsArgs),
    /// Generate text (or token ids) after a prompt, streaming it as it comes.
    Generate(generate::GenerateArgs),
    /// An interactive conversation through the model's chat template.
    Chat(chat::ChatArgs),
    /// Token ids of a text, or of a conversation rendered through the chat template.
    Tokenize(tokenize::TokenizeArgs),
    /// Prefill and decode speed as llama-bench measures them; memory bandwidth (--membw);
    /// the batching engine under concurrent clients (--concurrency).
    Bench(bench::BenchArgs),
    /// Write a Hugging Face checkpoint as a llama.cpp deepseek2 GGUF file (f32, f16, bf16,
    /// q8_0, q6_k, q4_k, q4_k_m), tokenizer included.
    Quantize(quantize::QuantizeArgs),
    /// KL divergence of a model's next-token distributions from a base model's (e.g. a
    /// quantized file against its original), and how often their top tokens agree.
    Kl(kl::KlArgs),
    /// The OpenAI-compatible HTTP server.
    Serve(serve::ServeArgs),
    /// Exit 0 if a server answers its health check (for container health checks).
    Probe(probe::ProbeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(a) => info::run(&a),
        Command::Logits(a) => generate::logits(&a),
        Command::Generate(a) => generate::generate(&a),
        Command::Chat(a) => chat::run(&a),
        Command::Tokenize(a) => tokenize::run(&a),
        Command::Bench(a) => bench::run(&a),
        Command::Quantize(a) => quantize::run(&a),
        Command::Kl(a) => kl::run(&a),
        Command::Serve(a) => serve::run(&a),
        Command::Probe(a) => probe::run(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
