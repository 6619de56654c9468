//! The engine: sampling and generation over the model.

pub mod blocks;
pub mod engine;
mod error;
pub mod generate;
mod output;
pub mod sampler;
pub mod scheduler;

pub use engine::{
    EngineConfig, EngineHandle, EngineStats, Event as EngineEvent, EventStream, Request, Usage,
};
pub use error::EngineError;
pub use generate::{
    BeamParams, Completion, Event, FinishReason, GenerateRequest, Generation, Generator,
    StopParams, Timings,
};
pub use sampler::{Sampled, Sampler, SamplingParams};
