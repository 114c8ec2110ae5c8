//! Rules that span more than one value, checked after the file parsed; every broken rule is reported.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::locate::ConfigPath;
use super::model::{
    AdaptiveConcurrencyConfig, BalancerKind, Config, FaultConfig, HashKey, HeaderMatchConfig,
    HeaderRewriteConfig, MatchConfig, RateLimitConfig, RetryConfig, RouteConfig, UpstreamConfig,
};

/// Upper bound on `retry.attempts`: more than this is a retry storm, not a policy.
const MAX_RETRY_ATTEMPTS: u32 = 10;
/// Upper bound on `retry.max_replay_bytes`, so one request cannot pin much memory.
const MAX_REPLAY_BYTES: u64 = 16 * 1024 * 1024;

/// Collects problems as (path, message) pairs.
#[derive(Default)]
struct Problems(Vec<(ConfigPath, String)>);

impl Problems {
    fn add(&mut self, path: ConfigPath, message: impl Into<String>) {
        self.0.push((path, message.into()));
    }
}

/// Every rule `config` breaks, in file order.
pub(super) fn check(config: &Config) -> Vec<(ConfigPath, String)> {
    let mut problems = Problems::default();
    let root = ConfigPath::default();

    if config.service.name.trim().is_empty() {
        problems.add(root.key("service").key("name"), "must not be empty");
    }
    if config.inbound.is_none() && config.outbound.is_empty() && config.tcp.is_empty() {
        problems.add(
            root.key("service"),
            "no listener: add an [inbound], [[outbound]] or [[tcp]] table",
        );
    }

    let mut listens = Listens::default();
    if let Some(inbound) = &config.inbound {
        listens.claim(&mut problems, root.key("inbound"), inbound.listen);
        positive(
            &mut problems,
            root.key("inbound").key("connect_timeout"),
            inbound.connect_timeout.0,
        );
        if let Some(timeout) = inbound.timeout {
            positive(&mut problems, root.key("inbound").key("timeout"), timeout.0);
        }
        check_policies(
            &mut problems,
            &root.key("inbound"),
            inbound.rate_limit.as_ref(),
            inbound.fault.as_ref(),
            &inbound.headers,
        );
    }

    let mut upstream_names = HashSet::new();
    for (i, upstream) in config.upstreams.iter().enumerate() {
        let path = root.key("upstream").index(i);
        if !upstream_names.insert(upstream.name.as_str()) {
            problems.add(
                path.key("name"),
                format!("upstream {:?} is defined more than once", upstream.name),
            );
        }
        check_upstream(&mut problems, &path, upstream);
    }

    for (i, outbound) in config.outbound.iter().enumerate() {
        let path = root.key("outbound").index(i);
        listens.claim(&mut problems, path.clone(), outbound.listen);
        if outbound.routes.is_empty() {
            problems.add(
                path.clone(),
                "no routes: add at least one [[outbound.route]]",
            );
        }
        let mut route_names = HashSet::new();
        let mut catch_all: Option<&str> = None;
        for (j, route) in outbound.routes.iter().enumerate() {
            let route_path = path.key("route").index(j);
            if route.name.trim().is_empty() {
                problems.add(route_path.key("name"), "must not be empty");
            } else if !route_names.insert(route.name.as_str()) {
                problems.add(
                    route_path.key("name"),
                    format!("route {:?} is defined more than once", route.name),
                );
            }
            if let Some(earlier) = catch_all {
                problems.add(
                    route_path.key("name"),
                    format!("unreachable: route {earlier:?} before it matches every request"),
                );
            }
            if matches_everything(&route.matches) {
                catch_all.get_or_insert(route.name.as_str());
            }
            check_route(&mut problems, &route_path, route, &upstream_names);
        }
    }
    if let Some(admin) = &config.admin {
        listens.claim(&mut problems, root.key("admin"), admin.listen);
    }
    let telemetry = &config.telemetry;
    let path = root.key("telemetry");
    if telemetry.queue_size == 0 {
        problems.add(path.key("queue_size"), "must be at least 1");
    }
    if telemetry.batch_size == 0 || telemetry.batch_size > telemetry.queue_size {
        problems.add(path.key("batch_size"), "must be between 1 and queue_size");
    }
    if !(0.0..=1.0).contains(&telemetry.sample_ratio) {
        problems.add(path.key("sample_ratio"), "must be between 0 and 1");
    }
    positive(
        &mut problems,
        path.key("flush_interval"),
        telemetry.flush_interval.0,
    );
    positive(
        &mut problems,
        path.key("export_timeout"),
        telemetry.export_timeout.0,
    );
    positive(
        &mut problems,
        path.key("metrics_interval"),
        telemetry.metrics_interval.0,
    );

    for (i, tcp) in config.tcp.iter().enumerate() {
        let path = root.key("tcp").index(i);
        listens.claim(&mut problems, path.clone(), tcp.listen);
        if !upstream_names.contains(tcp.upstream.as_str()) {
            problems.add(
                path.key("upstream"),
                format!("no [[upstream]] is named {:?}", tcp.upstream),
            );
        }
    }
    problems.0
}

/// Listen addresses taken so far, and by which listener.
#[derive(Default)]
struct Listens(HashMap<std::net::SocketAddr, String>);

impl Listens {
    /// Records that the listener at `path` uses `address`, reporting a clash. Port 0 never clashes:
    /// each such listener gets its own free port.
    fn claim(&mut self, problems: &mut Problems, path: ConfigPath, address: std::net::SocketAddr) {
        if address.port() == 0 {
            return;
        }
        if let Some(other) = self.0.insert(address, path.to_string()) {
            problems.add(
                path.key("listen"),
                format!("{address} is already used by {other}"),
            );
        }
    }
}

fn positive(problems: &mut Problems, path: ConfigPath, value: Duration) {
    if value.is_zero() {
        problems.add(path, "must be greater than zero");
    }
}

fn check_upstream(problems: &mut Problems, path: &ConfigPath, upstream: &UpstreamConfig) {
    if upstream.name.trim().is_empty() {
        problems.add(path.key("name"), "must not be empty");
    }
    positive(
        problems,
        path.key("connect_timeout"),
        upstream.connect_timeout.0,
    );
    let hashing = matches!(
        upstream.balancer,
        BalancerKind::RingHash | BalancerKind::Maglev
    );
    match &upstream.hash_key {
        None if hashing => problems.add(
            path.key("balancer"),
            "ring_hash and maglev need a hash_key: { header = \"...\" }, { cookie = \"...\" } or \"source_ip\"",
        ),
        Some(_) if !hashing => problems.add(path.key("hash_key"), "hash_key applies only to ring_hash and maglev"),
        Some(HashKey::Header(name)) if http::HeaderName::from_bytes(name.as_bytes()).is_err() => {
            problems.add(path.key("hash_key"), format!("{name:?} is not a valid header name"))
        }
        Some(HashKey::Cookie(name)) if name.is_empty() || name.contains([';', '=', ' ']) => {
            problems.add(path.key("hash_key"), format!("{name:?} is not a valid cookie name"))
        }
        _ => {}
    }
    if upstream.endpoints_file.is_some() && !upstream.endpoints.is_empty() {
        problems.add(
            path.key("endpoints_file"),
            "set either endpoints or endpoints_file, not both",
        );
    }
    if let Some(refresh) = upstream.dns_refresh {
        positive(problems, path.key("dns_refresh"), refresh.0);
    }
    for (i, endpoint) in upstream.endpoints.iter().enumerate() {
        if endpoint.weight == 0 {
            problems.add(
                path.key("endpoints").index(i).key("weight"),
                "must be at least 1 (remove the endpoint instead)",
            );
        }
    }
    if upstream.panic_threshold > 100 {
        problems.add(path.key("panic_threshold"), "is a percentage: 0 to 100");
    }
    if let Some(outlier) = &upstream.outlier_detection {
        let outlier_path = path.key("outlier_detection");
        if outlier.consecutive_5xx == 0
            && outlier.consecutive_gateway_errors == 0
            && outlier.success_rate_stdev_factor.is_none()
        {
            problems.add(
                outlier_path.clone(),
                "set consecutive_5xx or consecutive_gateway_errors above 0, or success_rate_stdev_factor, or remove the table",
            );
        }
        if let Some(factor) = outlier.success_rate_stdev_factor
            && !(factor.is_finite() && factor >= 0.0)
        {
            problems.add(
                outlier_path.key("success_rate_stdev_factor"),
                "must be a number of at least 0",
            );
        }
        positive(
            problems,
            outlier_path.key("success_rate_interval"),
            outlier.success_rate_interval.0,
        );
        if outlier.success_rate_min_hosts == 0 {
            problems.add(
                outlier_path.key("success_rate_min_hosts"),
                "must be at least 1",
            );
        }
        positive(
            problems,
            outlier_path.key("base_ejection_time"),
            outlier.base_ejection_time.0,
        );
        if outlier.max_ejection_time.0 < outlier.base_ejection_time.0 {
            problems.add(
                outlier_path.key("max_ejection_time"),
                "must be at least base_ejection_time",
            );
        }
        if outlier.max_ejection_percent > 100 {
            problems.add(
                outlier_path.key("max_ejection_percent"),
                "is a percentage: 0 to 100",
            );
        }
    }
    if let Some(check) = &upstream.health_check {
        let check_path = path.key("health_check");
        if !check.path.starts_with('/')
            || http::uri::PathAndQuery::try_from(check.path.as_str()).is_err()
        {
            problems.add(
                check_path.key("path"),
                format!("{:?} is not a path starting with '/'", check.path),
            );
        }
        positive(problems, check_path.key("interval"), check.interval.0);
        positive(problems, check_path.key("timeout"), check.timeout.0);
        for (key, value) in [
            ("unhealthy_threshold", check.unhealthy_threshold),
            ("healthy_threshold", check.healthy_threshold),
        ] {
            if value == 0 {
                problems.add(check_path.key(key), "must be at least 1");
            }
        }
    }
    let breaker = &upstream.circuit_breaker;
    for (key, value) in [
        ("max_requests", breaker.max_requests),
        ("max_connections", breaker.max_connections),
    ] {
        if value == Some(0) {
            problems.add(
                path.key("circuit_breaker").key(key),
                "must be at least 1 (remove it for no limit)",
            );
        }
    }
    if breaker.max_pending_requests.is_some() && breaker.max_connections.is_none() {
        problems.add(
            path.key("circuit_breaker").key("max_pending_requests"),
            "needs max_connections: requests only wait when every connection is in use",
        );
    }
    if let Some(adaptive) = &upstream.adaptive_concurrency {
        check_adaptive_concurrency(problems, &path.key("adaptive_concurrency"), adaptive);
    }
    let budget = &upstream.retry_budget;
    let budget_path = path.key("retry_budget");
    if !(0.0..=1000.0).contains(&budget.ratio) {
        problems.add(budget_path.key("ratio"), "must be between 0 and 1000");
    }
    if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&budget.ttl.0) {
        problems.add(budget_path.key("ttl"), "must be between 1s and 60s");
    }
    if budget.min_per_second >= i32::MAX as u32 {
        problems.add(budget_path.key("min_per_second"), "is too large");
    }
}

fn check_adaptive_concurrency(
    problems: &mut Problems,
    path: &ConfigPath,
    adaptive: &AdaptiveConcurrencyConfig,
) {
    if adaptive.min_limit == 0 {
        problems.add(
            path.key("min_limit"),
            "must be at least 1 (a limit of 0 would refuse everything)",
        );
    }
    if adaptive.max_limit < adaptive.min_limit {
        problems.add(path.key("max_limit"), "must be at least min_limit");
    }
    if !(adaptive.min_limit..=adaptive.max_limit).contains(&adaptive.initial_limit) {
        problems.add(
            path.key("initial_limit"),
            "must be between min_limit and max_limit",
        );
    }
    positive(
        problems,
        path.key("sample_window"),
        adaptive.sample_window.0,
    );
    if adaptive.baseline_window.0 < adaptive.sample_window.0 {
        problems.add(
            path.key("baseline_window"),
            "must be at least sample_window",
        );
    }
    if adaptive.min_samples == 0 {
        problems.add(path.key("min_samples"), "must be at least 1");
    }
    if !(adaptive.sample_percentile > 0.0 && adaptive.sample_percentile <= 100.0) {
        problems.add(
            path.key("sample_percentile"),
            "is a percentile: above 0, at most 100",
        );
    }
    if !(adaptive.latency_tolerance.is_finite() && adaptive.latency_tolerance >= 1.0) {
        problems.add(
            path.key("latency_tolerance"),
            "must be a number of at least 1 (1 = no rise allowed)",
        );
    }
    if !(adaptive.smoothing > 0.0 && adaptive.smoothing <= 1.0) {
        problems.add(path.key("smoothing"), "must be above 0 and at most 1");
    }
}

fn check_route(
    problems: &mut Problems,
    path: &ConfigPath,
    route: &RouteConfig,
    upstreams: &HashSet<&str>,
) {
    match (&route.upstream, route.splits.is_empty()) {
        (Some(_), false) => problems.add(
            path.key("upstream"),
            "set either `upstream` or [[split]] tables, not both",
        ),
        (None, true) => problems.add(
            path.key("name"),
            "no destination: set `upstream` or add [[split]] tables",
        ),
        _ => {}
    }
    if let Some(name) = &route.upstream
        && !upstreams.contains(name.as_str())
    {
        problems.add(
            path.key("upstream"),
            format!("no [[upstream]] is named {name:?}"),
        );
    }
    for (i, split) in route.splits.iter().enumerate() {
        if !upstreams.contains(split.upstream.as_str()) {
            problems.add(
                path.key("split").index(i).key("upstream"),
                format!("no [[upstream]] is named {:?}", split.upstream),
            );
        }
    }
    if !route.splits.is_empty() && route.splits.iter().all(|s| s.weight == 0) {
        problems.add(
            path.key("split"),
            "all split weights are 0: at least one must be positive",
        );
    }
    if let Some(timeout) = route.timeout {
        positive(problems, path.key("timeout"), timeout.0);
    }
    check_match(problems, &path.key("match"), &route.matches);
    if let Some(retry) = &route.retry {
        check_retry(problems, &path.key("retry"), retry);
    }
    check_policies(
        problems,
        path,
        route.rate_limit.as_ref(),
        route.fault.as_ref(),
        &route.headers,
    );
    if let Some(mirror) = &route.mirror {
        if !upstreams.contains(mirror.upstream.as_str()) {
            problems.add(
                path.key("mirror").key("upstream"),
                format!("no [[upstream]] is named {:?}", mirror.upstream),
            );
        }
        if !(0.0..=100.0).contains(&mirror.percent) {
            problems.add(
                path.key("mirror").key("percent"),
                "is a percentage: 0 to 100",
            );
        }
    }
}

/// Rate limit, fault and header rules, shared by routes and the inbound listener.
fn check_policies(
    problems: &mut Problems,
    path: &ConfigPath,
    rate_limit: Option<&RateLimitConfig>,
    fault: Option<&FaultConfig>,
    headers: &HeaderRewriteConfig,
) {
    if let Some(limit) = rate_limit {
        let limit_path = path.key("rate_limit");
        if !(limit.requests_per_second > 0.0 && limit.requests_per_second.is_finite()) {
            problems.add(
                limit_path.key("requests_per_second"),
                "must be a positive number",
            );
        }
        if limit.burst == Some(0) {
            problems.add(limit_path.key("burst"), "must be at least 1");
        }
        if let Some(HashKey::Header(name)) = &limit.per
            && http::HeaderName::from_bytes(name.as_bytes()).is_err()
        {
            problems.add(
                limit_path.key("per"),
                format!("{name:?} is not a valid header name"),
            );
        }
    }
    if let Some(fault) = fault {
        let fault_path = path.key("fault");
        for (key, value) in [
            ("delay_percent", fault.delay_percent),
            ("abort_percent", fault.abort_percent),
        ] {
            if !(0.0..=100.0).contains(&value) {
                problems.add(fault_path.key(key), "is a percentage: 0 to 100");
            }
        }
        if let Some(status) = fault.abort_status
            && !(200..=599).contains(&status)
        {
            problems.add(
                fault_path.key("abort_status"),
                "must be an HTTP status from 200 to 599",
            );
        }
        if fault.delay.is_none() && fault.abort_status.is_none() && !fault.header_control {
            problems.add(
                fault_path,
                "set delay, abort_status or header_control, or remove the table",
            );
        }
    }
    for (side, ops) in [
        ("request", &headers.request),
        ("response", &headers.response),
    ] {
        let ops_path = path.key("headers").key(side);
        for (op, names) in [
            ("set", ops.set.keys().collect::<Vec<_>>()),
            ("add", ops.add.keys().collect()),
            ("remove", ops.remove.iter().collect()),
        ] {
            for name in names {
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    problems.add(
                        ops_path.key(op),
                        format!("{name:?} is not a valid header name"),
                    );
                }
            }
        }
        for (op, values) in [("set", &ops.set), ("add", &ops.add)] {
            for (name, value) in values {
                if http::HeaderValue::from_str(value).is_err() {
                    problems.add(
                        ops_path.key(op).key(name),
                        format!("{value:?} is not a valid header value"),
                    );
                }
            }
        }
    }
}

fn check_match(problems: &mut Problems, path: &ConfigPath, matches: &MatchConfig) {
    let path_rules = [
        matches.path_prefix.is_some(),
        matches.path_exact.is_some(),
        matches.path_regex.is_some(),
    ];
    if path_rules.iter().filter(|set| **set).count() > 1 {
        problems.add(
            path.clone(),
            "set at most one of path_prefix, path_exact, path_regex",
        );
    }
    for (key, value) in [
        ("path_prefix", &matches.path_prefix),
        ("path_exact", &matches.path_exact),
    ] {
        if let Some(value) = value
            && !value.starts_with('/')
        {
            problems.add(path.key(key), format!("{value:?} must start with '/'"));
        }
    }
    if let Some(host) = &matches.host
        && host.trim().is_empty()
    {
        problems.add(path.key("host"), "must not be empty");
    }
    for (name, rule) in &matches.headers {
        let header_path = path.key("headers").key(name);
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            problems.add(
                header_path.clone(),
                format!("{name:?} is not a valid header name"),
            );
        }
        if set_fields(rule) != 1 {
            problems.add(
                header_path,
                "set exactly one of exact, prefix, regex, present",
            );
        }
    }
}

fn set_fields(rule: &HeaderMatchConfig) -> usize {
    [
        rule.exact.is_some(),
        rule.prefix.is_some(),
        rule.regex.is_some(),
        rule.present.is_some(),
    ]
    .iter()
    .filter(|set| **set)
    .count()
}

fn matches_everything(matches: &MatchConfig) -> bool {
    let MatchConfig {
        host,
        path_prefix,
        path_exact,
        path_regex,
        method,
        headers,
    } = matches;
    host.is_none()
        && path_exact.is_none()
        && path_regex.is_none()
        && method.is_none()
        && headers.is_empty()
        && path_prefix.as_deref().is_none_or(|prefix| prefix == "/")
}

fn check_retry(problems: &mut Problems, path: &ConfigPath, retry: &RetryConfig) {
    if retry.attempts > MAX_RETRY_ATTEMPTS {
        problems.add(
            path.key("attempts"),
            format!("at most {MAX_RETRY_ATTEMPTS}"),
        );
    }
    if retry.attempts > 0 && retry.on.is_empty() {
        problems.add(
            path.key("on"),
            "attempts > 0 but no retry condition: list e.g. [\"gateway-error\"]",
        );
    }
    if let Some(per_try) = retry.per_try_timeout {
        positive(problems, path.key("per_try_timeout"), per_try.0);
    }
    positive(problems, path.key("backoff_base"), retry.backoff_base.0);
    if retry.backoff_max.0 < retry.backoff_base.0 {
        problems.add(
            path.key("backoff_max"),
            format!("must be at least backoff_base ({})", retry.backoff_base),
        );
    }
    if retry.max_replay_bytes > MAX_REPLAY_BYTES {
        problems.add(
            path.key("max_replay_bytes"),
            format!("at most {MAX_REPLAY_BYTES}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, parse};

    /// Asserts that `text` parses but fails validation with exactly these (line, path) problems.
    fn assert_problems(text: &str, expected: &[(Option<usize>, &str)]) {
        match parse(text, "p.toml") {
            Err(ConfigError::Invalid { problems, .. }) => {
                let found: Vec<(Option<usize>, &str)> =
                    problems.iter().map(|p| (p.line, p.path.as_str())).collect();
                assert_eq!(found, expected);
            }
            other => panic!("expected validation problems, got {:?}", other.err()),
        }
    }

    #[test]
    fn reports_every_problem_with_its_line() {
        let text = r#"
[service]
name = "web"

[[outbound]]
listen = "127.0.0.1:0"

[[outbound.route]]
name = "all"
upstream = "missing"

[[outbound.route]]
name = "later"
match = { path_prefix = "api", path_exact = "/x" }
upstream = "b"

[[upstream]]
name = "b"
endpoints = [{ address = "127.0.0.1:1", weight = 0 }]
[upstream.retry_budget]
ttl = "0s"
"#;
        assert_problems(
            text,
            &[
                (Some(19), "upstream[0].endpoints[0].weight"),
                (Some(21), "upstream[0].retry_budget.ttl"),
                (Some(10), "outbound[0].route[0].upstream"),
                (Some(13), "outbound[0].route[1].name"),
                (Some(14), "outbound[0].route[1].match"),
                (Some(14), "outbound[0].route[1].match.path_prefix"),
            ],
        );
    }

    #[test]
    fn hash_key_goes_with_hashing_balancers_only() {
        let text = r#"
[service]
name = "web"

[[outbound]]
listen = "127.0.0.1:0"
route = [{ name = "all", upstream = "a" }]

[[upstream]]
name = "a"
balancer = "ring_hash"

[[upstream]]
name = "b"
hash_key = "source_ip"

[[upstream]]
name = "c"
balancer = "maglev"
hash_key = { header = "x-user" }
"#;
        assert_problems(
            text,
            &[
                (Some(11), "upstream[0].balancer"),
                (Some(15), "upstream[1].hash_key"),
            ],
        );
    }

    #[test]
    fn adaptive_concurrency_bounds_are_checked_with_their_lines() {
        let text = r#"
[service]
name = "web"

[[outbound]]
listen = "127.0.0.1:0"
route = [{ name = "all", upstream = "a" }]

[[upstream]]
name = "a"

[upstream.adaptive_concurrency]
min_limit = 10
max_limit = 5
sample_percentile = 0
smoothing = 1.5
"#;
        assert_problems(
            text,
            &[
                (Some(14), "upstream[0].adaptive_concurrency.max_limit"),
                (Some(12), "upstream[0].adaptive_concurrency.initial_limit"),
                (
                    Some(15),
                    "upstream[0].adaptive_concurrency.sample_percentile",
                ),
                (Some(16), "upstream[0].adaptive_concurrency.smoothing"),
            ],
        );
        let defaults = text.replace(
            "min_limit = 10\nmax_limit = 5\nsample_percentile = 0\nsmoothing = 1.5\n",
            "",
        );
        assert!(parse(&defaults, "p.toml").is_ok(), "the defaults are valid");
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let text = "[service]\nname = \"web\"\nbogus = 1\n";
        let Err(ConfigError::Syntax {
            line,
            column,
            message,
            ..
        }) = parse(text, "p.toml")
        else {
            panic!("expected a syntax error");
        };
        assert_eq!((line, column), (3, 1));
        assert!(message.contains("bogus"), "{message}");
    }

    #[test]
    fn bad_values_are_syntax_errors_at_their_line() {
        let text = "[service]\nname = \"web\"\n\n[inbound]\nlisten = \"127.0.0.1:0\"\napp = \"localhost\"\n";
        let Err(ConfigError::Syntax { line, message, .. }) = parse(text, "p.toml") else {
            panic!("expected a syntax error");
        };
        assert_eq!(line, 6);
        assert!(message.contains("no port"), "{message}");
    }
}
