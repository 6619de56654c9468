//! `deeprust`: the command-line face of the engine.

mod generate;
mod info;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

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
    /// Generate tokens after a prompt, through the KV cache.
    Generate(generate::GenerateArgs),
}

/// Where the model comes from.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// A Hugging Face model directory (config.json + *.safetensors).
    #[arg(long)]
    pub model: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(a) => info::run(&a),
        Command::Logits(a) => generate::logits(&a),
        Command::Generate(a) => generate::generate(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
