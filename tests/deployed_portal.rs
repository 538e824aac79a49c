//! The producer portal on a devnet of real processes (3 masters, 2 enterprise
//! nodes and one hosting `producer:alice`'s Personal Vault), over HTTPS:
//! `producer:alice` signs in by signing the sign-in page's challenge with
//! `symphony producer sign-in --challenge HEX --dir <devnet>`, gets a session
//! cookie (HttpOnly, Secure, SameSite=Strict), sees her consent, budget, earnings
//! and stake, and revokes marketing with the page's form (its CSRF token); the
//! next Luckin campaign leaves her out, the one before delivered her.
//! A reused challenge is a 401 page, a form without the CSRF token a 403.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod deployed;

use std::net::SocketAddr;
use std::time::Duration;

use deployed::{cli_json, luckin, Net};
use symphony_deploy::client::HttpReply;

fn http(
    net: &Net,
    gw: SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: &str,
) -> HttpReply {
    let tls = symphony_deploy::tls::public_client(
        symphony_deploy::tls::load_roots(&net.layout.ca).unwrap(),
    )
    .unwrap();
    let mut headers = vec![(
        "content-type",
        "application/x-www-form-urlencoded".to_owned(),
    )];
    if let Some(c) = cookie {
        headers.push(("cookie", c.to_owned()));
    }
    net.rt
        .block_on(symphony_deploy::client::https_request(
            gw,
            tls,
            method,
            path,
            &headers,
            form.as_bytes().to_vec(),
        ))
        .unwrap()
}

fn text(r: &HttpReply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// The value of the first `name="NAME" value="…"` input after `from` in `html`.
fn input(html: &str, from: &str, name: &str) -> String {
    let at = html
        .find(from)
        .unwrap_or_else(|| panic!("no {from}: {html}"));
    let key = format!("name=\"{name}\" value=\"");
    let v = at
        + html[at..]
            .find(&key)
            .unwrap_or_else(|| panic!("no {name}: {html}"))
        + key.len();
    html[v..v + html[v..].find('"').unwrap()].to_owned()
}

/// The consent state cell of `scope` on the portal page.
fn consent_state(html: &str, scope: &str) -> String {
    let at = html
        .find(&format!("<tr data-scope=\"{scope}\">"))
        .unwrap_or_else(|| panic!("no row {scope}: {html}"));
    let row = &html[at..at + html[at..].find("</tr>").unwrap()];
    if row.contains(">granted<") {
        "granted".into()
    } else if row.contains(">revoked<") {
        "revoked".into()
    } else {
        panic!("no state in {row}")
    }
}

fn audience(net: &Net, id: &str) -> Vec<String> {
    let result = net.result(id);
    result["outcome"]["audience"]
        .as_array()
        .unwrap_or_else(|| panic!("no audience: {result}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_producer_signs_in_to_the_portal_revokes_marketing_and_the_next_campaign_leaves_her_out() {
    let contact = symphony_node::producer::demo::PRODUCER_CONTACT;
    let net = Net::start_with_personal_vault(2);
    let gw = net.layout.gateways()[0];

    // No session: to the sign-in page.
    let r = http(&net, gw, "GET", "/explorer/portal", None, "");
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/explorer/portal/sign-in"));

    // Sign in: the page's challenge, signed by the CLI with her devnet key.
    let page = text(&http(&net, gw, "GET", "/explorer/portal/sign-in", None, ""));
    let challenge = input(&page, "<form", "challenge");
    assert_eq!(challenge.len(), 64, "{page}");
    let signed = cli_json(&net, &["producer", "sign-in", "--challenge", &challenge]);
    assert_eq!(signed["caller"], "producer:alice", "{signed}");
    assert_eq!(signed["host"], gw.to_string());
    let form = format!(
        "challenge={challenge}&caller=producer%3Aalice&signature={}",
        signed["signature"].as_str().unwrap()
    );
    let r = http(&net, gw, "POST", "/explorer/portal/sign-in", None, &form);
    assert_eq!(r.status, 303, "{}", text(&r));
    let set = r.header("set-cookie").expect("a session cookie").to_owned();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(set.contains(attr), "{set}");
    }
    let cookie = set.split(';').next().unwrap().to_owned();
    // The same challenge again: 401, no cookie.
    let again = http(&net, gw, "POST", "/explorer/portal/sign-in", None, &form);
    assert_eq!(again.status, 401, "{}", text(&again));
    assert!(text(&again).contains("already used"));
    assert!(again.header("set-cookie").is_none());

    // Her portal: her account only.
    let r = http(&net, gw, "GET", "/explorer/portal", Some(&cookie), "");
    assert_eq!(r.status, 200, "{}", text(&r));
    let html = text(&r);
    assert!(
        html.contains("producer:alice") && html.contains("pv-alice"),
        "{html}"
    );
    assert_eq!(consent_state(&html, "marketing"), "granted");
    assert_eq!(consent_state(&html, "training"), "revoked");
    assert!(html.contains("id=\"budget\"") && html.contains("id=\"earnings\""));
    assert!(html.contains("id=\"replenishes\""));
    assert!(
        !html.contains(contact),
        "the portal shows no contact handle"
    );

    // Before the revocation, her receipt puts her in the audience.
    let first = net.submit_ok(luckin());
    let status = net.wait_final(&first, Duration::from_secs(180));
    assert_eq!(status["status"], "completed", "{status}");
    assert!(audience(&net, &first).iter().any(|h| h == contact));

    // The revoke form without its CSRF token: 403, nothing changed.
    let r = http(
        &net,
        gw,
        "POST",
        "/explorer/portal/consent",
        Some(&cookie),
        "scope=marketing&action=revoke",
    );
    assert_eq!(r.status, 403, "{}", text(&r));
    let consent = cli_json(&net, &["producer", "consent"]);
    let marketing = |v: &serde_json::Value| {
        v["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["scope"] == "marketing")
            .unwrap()["granted"]
            .clone()
    };
    assert_eq!(marketing(&consent), true, "{consent}");

    // The page's revoke form, as the browser posts it.
    let csrf = input(&html, "<tr data-scope=\"marketing\">", "csrf");
    let action = input(&html, "<tr data-scope=\"marketing\">", "action");
    assert_eq!(action, "revoke");
    let r = http(
        &net,
        gw,
        "POST",
        "/explorer/portal/consent",
        Some(&cookie),
        &format!("csrf={csrf}&scope=marketing&action={action}"),
    );
    assert_eq!(r.status, 303, "{}", text(&r));
    let html = text(&http(
        &net,
        gw,
        "GET",
        "/explorer/portal",
        Some(&cookie),
        "",
    ));
    assert_eq!(consent_state(&html, "marketing"), "revoked", "{html}");
    let consent = cli_json(&net, &["producer", "consent"]);
    assert_eq!(marketing(&consent), false, "{consent}");

    // The next campaign leaves her out; the first one's delivery stands.
    let second = net.submit_ok(luckin());
    let status = net.wait_final(&second, Duration::from_secs(180));
    assert_eq!(status["status"], "completed", "{status}");
    let delivered = audience(&net, &second);
    assert!(!delivered.is_empty());
    assert!(
        !delivered.iter().any(|h| h == contact),
        "{contact} delivered after the revocation"
    );
    assert!(audience(&net, &first).iter().any(|h| h == contact));

    // Signed out: the cookie no longer opens the portal.
    let r = http(
        &net,
        gw,
        "POST",
        "/explorer/portal/sign-out",
        Some(&cookie),
        "",
    );
    assert_eq!(r.status, 303);
    let r = http(&net, gw, "GET", "/explorer/portal", Some(&cookie), "");
    assert_eq!(r.status, 303);
}
