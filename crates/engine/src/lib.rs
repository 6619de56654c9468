//! The engine: sampling and generation over the model.

pub mod blocks;
mod error;
pub mod generate;
pub mod sampler;
pub mod scheduler;

pub use error::EngineError;
pub use generate::{
    BeamParams, Completion, Event, FinishReason, GenerateRequest, Generation, Generator,
    StopParams, Timings,
};
pub use sampler::{Sampled, Sampler, SamplingParams};
