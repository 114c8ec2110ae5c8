//! Route matching, weighted splits and header handling, through a running proxy.

mod common;

use common::{bounded, client, get, named, proxy, send};
use http::StatusCode;

#[tokio::test]
async fn routes_by_path_method_and_header() {
    bounded(async {
        let (a, b, c) = (named("a").await, named("b").await, named("c").await);
        let config = format!(
            r#"
[service]
name = "web"

[[outbound]]
listen = "127.0.0.1:0"

[[outbound.route]]
name = "exact"
match = {{ path_exact = "/exact" }}
upstream = "a"

[[outbound.route]]
name = "items"
match = {{ path_regex = "/items/[0-9]+" }}
upstream = "b"

[[outbound.route]]
name = "canary"
match = {{ path_prefix = "/api", headers = {{ x-canary = {{ exact = "1" }} }} }}
upstream = "c"

[[outbound.route]]
name = "api-writes"
match = {{ path_prefix = "/api", method = "POST" }}
upstream = "b"

[[outbound.route]]
name = "api"
match = {{ path_prefix = "/api" }}
upstream = "a"

[[upstream]]
name = "a"
endpoints = [{{ address = "{}" }}]

[[upstream]]
name = "b"
endpoints = [{{ address = "{}" }}]

[[upstream]]
name = "c"
endpoints = [{{ address = "{}" }}]
"#,
            a.addr, b.addr, c.addr
        );
        let proxy = proxy(&config).await;
        let base = format!("http://{}", proxy.outbound());
        let http = client();

        assert_eq!(get(&http, &format!("{base}/exact")).await.1, "a");
        assert_eq!(get(&http, &format!("{base}/items/42")).await.1, "b");
        assert_eq!(get(&http, &format!("{base}/api/x")).await.1, "a");
        assert_eq!(
            send(http.get(format!("{base}/api/x")).header("x-canary", "1"))
                .await
                .1,
            "c"
        );
        assert_eq!(
            send(http.get(format!("{base}/api/x")).header("x-canary", "2"))
                .await
                .1,
            "a"
        );
        assert_eq!(
            send(http.post(format!("{base}/api/x")).body("w")).await.1,
            "b"
        );

        let (status, kind, body) = get(&http, &format!("{base}/items/42/more")).await;
        assert_eq!((status, kind.as_str()), (StatusCode::NOT_FOUND, "no-route"));
        assert!(
            body.contains("no route matches GET /items/42/more"),
            "{body}"
        );
        assert_eq!((a.hits(), b.hits(), c.hits()), (3, 2, 1));
    })
    .await;
}

#[tokio::test]
async fn weighted_split_follows_weights() {
    bounded(async {
        let (stable, canary) = (named("stable").await, named("canary").await);
        let config = format!(
            r#"
[service]
name = "web"

[[outbound]]
listen = "127.0.0.1:0"

[[outbound.route]]
name = "reviews"

[[outbound.route.split]]
upstream = "stable"
weight = 80

[[outbound.route.split]]
upstream = "canary"
weight = 20

[[upstream]]
name = "stable"
endpoints = [{{ address = "{}" }}]

[[upstream]]
name = "canary"
endpoints = [{{ address = "{}" }}]
"#,
            stable.addr, canary.addr
        );
        let proxy = proxy(&config).await;
        let http = client();
        let url = format!("http://{}/reviews", proxy.outbound());
        const N: usize = 500;
        for _ in 0..N {
            assert_eq!(get(&http, &url).await.0, StatusCode::OK);
        }
        // Binomial(500, 0.2): mean 100, sd ≈ 8.9; ±45 is five standard deviations.
        assert_eq!(stable.hits() + canary.hits(), N);
        assert!(
            (55..=145).contains(&canary.hits()),
            "canary got {} of {N}",
            canary.hits()
        );
    })
    .await;
}

#[tokio::test]
async fn rewrites_hop_by_hop_and_forwarding_headers() {
    bounded(async {
        let app = named("app").await;
        let config = format!(
            r#"
[service]
name = "web"

[inbound]
listen = "127.0.0.1:0"
app = "{}"
"#,
            app.addr
        );
        let proxy = proxy(&config).await;
        let url = format!("http://{}/headers", proxy.inbound());
        let response = match client()
            .get(&url)
            .header("connection", "x-private")
            .header("x-private", "secret")
            .header("x-forwarded-for", "10.1.1.1")
            .header("x-kept", "yes")
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) => panic!("request failed: {e}"),
        };
        let seen = |name: &str| {
            response
                .headers()
                .get(format!("x-echo-{name}"))
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(seen("x-kept").as_deref(), Some("yes"));
        assert_eq!(
            seen("x-private"),
            None,
            "a header named in Connection must not be forwarded"
        );
        assert_eq!(
            seen("x-forwarded-for").as_deref(),
            Some("10.1.1.1, 127.0.0.1")
        );
        assert_eq!(
            seen("host"),
            Some(proxy.inbound().to_string()),
            "Host is preserved"
        );
    })
    .await;
}
