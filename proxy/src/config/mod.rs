//! The proxy's configuration: a TOML file, its typed model, and the checks it must pass.
//!
//! [`load`] reads a file and [`parse`] a string. Both return a [`Config`] only if it passed every
//! check; otherwise a [`ConfigError`] names the file, the line and the reason for each problem found,
//! all at once. The file format is documented with examples in `docs/proxy-config.md`.

mod locate;
mod model;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use model::{
    AdaptiveConcurrencyConfig, Address, AdminConfig, BalancerKind, CircuitBreakerConfig, Config,
    EndpointConfig, EndpointsFile, FaultConfig, HashKey, HeaderMatchConfig, HeaderOpsConfig,
    HeaderRewriteConfig, HealthCheckConfig, HumanDuration, InboundConfig, MatchConfig, MethodName,
    MirrorConfig, OtlpEndpoint, OutboundConfig, OutlierConfig, Pattern, Protocol, RateLimitConfig,
    RetryBudgetConfig, RetryConfig, RetryOn, RouteConfig, ServiceConfig, SplitConfig, TcpConfig,
    TelemetryConfig, UpstreamConfig,
};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The text is not valid TOML, or a value has the wrong type or syntax.
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        /// File name as given.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The file parsed but breaks one or more rules; every broken rule is listed.
    #[error("{}", render_problems(file, problems))]
    Invalid {
        /// File name as given.
        file: String,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

/// One rule a valid-looking file breaks, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line of the offending value (or of its table when the value is missing).
    pub line: Option<usize>,
    /// Path of the value, e.g. `outbound[0].route[1].split[0].upstream`.
    pub path: String,
    /// What is wrong and, where it helps, what to write instead.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

fn render_problems(file: &str, problems: &[Problem]) -> String {
    let mut out = format!("{file}: {} problem(s) in the configuration", problems.len());
    for problem in problems {
        match problem.line {
            Some(line) => out.push_str(&format!(
                "\n  {file}:{line}: {}: {}",
                problem.path, problem.message
            )),
            None => out.push_str(&format!(
                "\n  {file}: {}: {}",
                problem.path, problem.message
            )),
        }
    }
    out
}

/// Parses and checks the text of an upstream's `endpoints_file`; `file` names it in errors.
pub fn parse_endpoints(text: &str, file: &str) -> Result<Vec<EndpointConfig>, ConfigError> {
    let parsed: EndpointsFile = toml::from_str(text).map_err(|e| syntax_error(text, file, &e))?;
    let problems: Vec<Problem> = parsed
        .endpoints
        .iter()
        .enumerate()
        .filter(|(_, endpoint)| endpoint.weight == 0)
        .map(|(i, _)| {
            let path = locate::ConfigPath::default()
                .key("endpoints")
                .index(i)
                .key("weight");
            Problem {
                line: locate::line_of(text, &path),
                path: path.to_string(),
                message: "must be at least 1 (remove the endpoint instead)".to_owned(),
            }
        })
        .collect();
    if problems.is_empty() {
        Ok(parsed.endpoints)
    } else {
        Err(ConfigError::Invalid {
            file: file.to_owned(),
            problems,
        })
    }
}

fn syntax_error(text: &str, file: &str, error: &toml::de::Error) -> ConfigError {
    let offset = error.span().map_or(0, |span| span.start);
    ConfigError::Syntax {
        file: file.to_owned(),
        line: locate::line_at(text, offset),
        column: locate::column_at(text, offset),
        message: error.message().trim_end().to_owned(),
    }
}

/// Reads and checks the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// Parses and checks configuration `text`; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let config: Config = toml::from_str(text).map_err(|e| syntax_error(text, file, &e))?;
    let problems: Vec<Problem> = validate::check(&config)
        .into_iter()
        .map(|(path, message)| Problem {
            line: locate::line_of(text, &path),
            path: path.to_string(),
            message,
        })
        .collect();
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid {
            file: file.to_owned(),
            problems,
        })
    }
}
