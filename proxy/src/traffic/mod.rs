//! Per-route traffic control: rate limits, fault injection, header rewrites and mirroring.

mod fault;
mod mirror;
mod rate_limit;
mod rewrite;

pub(crate) use fault::Fault;
pub(crate) use mirror::{MAX_MIRROR_BODY, Mirror};
pub(crate) use rate_limit::RateLimiter;
pub(crate) use rewrite::HeaderOps;
