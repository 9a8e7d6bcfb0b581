#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The web console in a real browser: headless Chromium from Debian's
//! packages, driven over WebDriver by chromedriver, against two real nodes.
//! The administrator sees a blocked request, records the PIPIA and the
//! consent, approves and sees FINALIZED; rejects another with a reason the
//! researcher sees; the researcher downloads the data; the language switch
//! shows Chinese; a form without its CSRF token and a researcher on an
//! administrator page are refused.
//!
//! Set `BAYSPACE_CONSOLE_SCREENSHOTS=DIR` to keep the screenshots of the
//! pending-offer page (docs/console/ has them).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bayspace_tests::pair::*;
use bayspace_tests::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn start(log: &Path) -> Driver {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: install Debian's `chromium chromium-driver` (.ci/run does)"
            );
        }
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < DEADLINE, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Driver { child, port }
    }

    /// A browser of its own (fresh profile), accepting the nodes'
    /// self-signed certificates for this session only.
    async fn browser(&self, profile: &Path, downloads: &Path) -> Client {
        let caps = json!({
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,1600",
                    format!("--user-data-dir={}", profile.display()),
                ],
                "prefs": {
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                    "intl.accept_languages": "en-GB,en",
                },
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap()
    }
}

fn console_url(dir: &Path) -> String {
    format!("https://{}", grpc_addr(dir))
}

async fn main_text(c: &Client) -> String {
    match c.find(Locator::Css("main")).await {
        Ok(m) => m.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Reloads `url` until its main text contains `needle`.
async fn wait_for_text(c: &Client, url: &str, needle: &str, node: &Node) -> String {
    let start = Instant::now();
    loop {
        c.goto(url).await.unwrap();
        let text = main_text(c).await;
        if text.contains(needle) {
            return text;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for `{needle}` at {url}; page:\n{text}\nlog:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Clicks a submit button and waits for the next page to show `needle`.
async fn submit_and_expect(c: &Client, button: Locator<'_>, needle: &str) -> String {
    c.find(button).await.unwrap().click().await.unwrap();
    let start = Instant::now();
    loop {
        let text = main_text(c).await;
        if text.contains(needle) {
            return text;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "after the click, no `{needle}`; page:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sign_in(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/")).await.unwrap();
    assert!(c.current_url().await.unwrap().path() == "/signin");
    c.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    c.find(Locator::Css("main form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let start = Instant::now();
    while c.current_url().await.unwrap().path() == "/signin" {
        assert!(start.elapsed() < DEADLINE, "{}", main_text(c).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The card (section) of the page whose heading names `title`.
fn card(title: &str, rest: &str) -> String {
    format!("//section[.//*[self::h2 or self::h3][contains(., '{title}')]]{rest}")
}

async fn screenshot(c: &Client, name: &str, tmp: &Path) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let dir = std::env::var_os("BAYSPACE_CONSOLE_SCREENSHOTS")
        .map_or_else(|| tmp.to_owned(), PathBuf::from);
    std::fs::write(dir.join(name), png).unwrap();
}

fn downloaded(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            !p.extension()
                .is_some_and(|e| e == "crdownload" || e == "tmp")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrator_and_researcher_in_a_real_browser() {
    let p = Pair::start(false);
    let tmp = p.space.tmp.path().to_owned();
    let blocked = p.publish(
        "Diabetes cohort 2026",
        &[
            "--personal",
            "150000",
            "--recipient-region",
            "hk",
            "--approval",
            "manual",
        ],
    );
    let data = std::fs::read(tmp.join("cohort.csv")).unwrap();
    p.publish(
        "Clinic visits",
        &[
            "--personal",
            "0",
            "--recipient-region",
            "hk",
            "--approval",
            "manual",
        ],
    );

    let driver = Driver::start(&tmp.join("chromedriver.log"));
    let downloads = tmp.join("downloads");
    std::fs::create_dir(&downloads).unwrap();
    let researcher = driver
        .browser(&tmp.join("profile-researcher"), &downloads)
        .await;
    let admin = driver
        .browser(&tmp.join("profile-admin"), &tmp.join("unused"))
        .await;
    let hk = console_url(&p.hk.dir);
    let sz = console_url(&p.sz.dir);

    // The researcher signs in on HKU, finds both datasets and asks for them.
    sign_in(&researcher, &hk, &p.token).await;
    for title in ["Diabetes cohort 2026", "Clinic visits"] {
        researcher
            .goto(&format!("{hk}/catalog?q={}", title.replace(' ', "+")))
            .await
            .unwrap();
        let text = main_text(&researcher).await;
        assert!(text.contains(title), "{text}");
        submit_and_expect(
            &researcher,
            Locator::XPath(&card(title, "//button[@type='submit']")),
            "Requested; the negotiation is REQUESTED",
        )
        .await;
    }

    // A researcher's session gets no administrator page.
    researcher
        .goto(&format!("{hk}/admin/offers"))
        .await
        .unwrap();
    let text = main_text(&researcher).await;
    assert!(
        text.contains("This page is for the node's administrator only"),
        "{text}"
    );

    // The administrator of Shenzhen sees the request and what blocks it.
    let admin_token = std::fs::read_to_string(p.sz.dir.join("admin.token")).unwrap();
    sign_in(&admin, &sz, admin_token.trim()).await;
    let offers = format!("{sz}/admin/offers");
    let text = wait_for_text(&admin, &offers, "Clinic visits", &p.sz).await;
    for needle in [
        "Diabetes cohort 2026",
        "HKU",
        "Chan Tai Man",
        "academic-research",
        "GBA standard contract",
        "mainland-hk",
        "No personal information protection impact assessment (PIPIA) on file",
        "blocker:pipia",
        "blocker:consent",
        "Approval is blocked until the missing records are on file",
        "obligation:",
    ] {
        assert!(text.contains(needle), "`{needle}` not on the page:\n{text}");
    }
    // Tall enough for both requests, the blocked one with its forms.
    admin.set_window_size(1280, 2400).await.unwrap();
    screenshot(&admin, "pending-offer-en.png", &tmp).await;

    // The language switch, on every page, shows Traditional Chinese.
    admin
        .find(Locator::LinkText("繁體中文"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let text = wait_for_text(&admin, &offers, "待審批申請", &p.sz).await;
    assert!(
        text.contains("阻礙事項") && text.contains("未備存個人信息保護影響評估"),
        "{text}"
    );
    screenshot(&admin, "pending-offer-zh-hant.png", &tmp).await;
    admin
        .find(Locator::LinkText("简体中文"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let text = wait_for_text(&admin, &offers, "待审批申请", &p.sz).await;
    assert!(text.contains("阻碍事项"), "{text}");
    admin
        .find(Locator::LinkText("English"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&admin, &offers, "Pending offers", &p.sz).await;

    // A form posted without its CSRF token is refused, and changes nothing.
    let pipia_form = card(
        "Diabetes cohort 2026",
        "//form[.//input[@name='pipia_ref']]",
    );
    admin
        .find(Locator::XPath(&format!(
            "{pipia_form}//input[@name='pipia_ref']"
        )))
        .await
        .unwrap()
        .send_keys("PIPIA-FORGED")
        .await
        .unwrap();
    let csrf_input = admin
        .find(Locator::XPath(&format!(
            "{pipia_form}//input[@name='csrf']"
        )))
        .await
        .unwrap();
    admin
        .execute(
            "arguments[0].remove();",
            vec![serde_json::to_value(&csrf_input).unwrap()],
        )
        .await
        .unwrap();
    submit_and_expect(
        &admin,
        Locator::XPath(&format!("{pipia_form}//button")),
        "did not carry this session's security token",
    )
    .await;
    let text = wait_for_text(&admin, &offers, "blocker:pipia", &p.sz).await;
    assert!(!text.contains("PIPIA-FORGED"), "{text}");

    // The PIPIA reference, then the consent, through their forms.
    admin
        .find(Locator::XPath(&format!(
            "{pipia_form}//input[@name='pipia_ref']"
        )))
        .await
        .unwrap()
        .send_keys("PIPIA-7")
        .await
        .unwrap();
    let text = submit_and_expect(
        &admin,
        Locator::XPath(&format!("{pipia_form}//button")),
        "Records saved",
    )
    .await;
    assert!(text.contains("PIPIA PIPIA-7"), "{text}");
    assert!(!text.contains("blocker:pipia"), "{text}");
    let consent_form = card("Diabetes cohort 2026", "//form[.//input[@name='confirm']]");
    admin
        .find(Locator::XPath(&format!(
            "{consent_form}//input[@name='confirm']"
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let text = submit_and_expect(
        &admin,
        Locator::XPath(&format!("{consent_form}//button")),
        "Records saved",
    )
    .await;
    assert!(text.contains("Nothing blocks approval."), "{text}");

    // Approve; both sides reach FINALIZED.
    let approve = card(
        "Diabetes cohort 2026",
        "//form[.//input[@name='action' and @value='approve']]",
    );
    admin
        .find(Locator::XPath(&format!("{approve}//input[@name='note']")))
        .await
        .unwrap()
        .send_keys("PIPIA-7 on file")
        .await
        .unwrap();
    submit_and_expect(
        &admin,
        Locator::XPath(&format!("{approve}//button")),
        "Approved",
    )
    .await;
    let text = wait_for_text(
        &admin,
        &format!("{sz}/admin/negotiations"),
        "FINALIZED",
        &p.sz,
    )
    .await;
    assert!(text.contains("Agreements"), "{text}");

    // The other administrator pages show what they are for.
    for (path, needle) in [
        ("/admin/filings", "working days left"),
        ("/admin/audit", "was verified on the server just now"),
        ("/admin/members", "HKU"),
        ("/admin/datasets", "Diabetes cohort 2026"),
        ("/admin/researchers", "Add a researcher"),
    ] {
        wait_for_text(&admin, &format!("{sz}{path}"), needle, &p.sz).await;
    }

    // Reject the other with a reason; the researcher sees it.
    wait_for_text(&admin, &offers, "Clinic visits", &p.sz).await;
    let reject = card(
        "Clinic visits",
        "//form[.//input[@name='action' and @value='reject']]",
    );
    admin
        .find(Locator::XPath(&format!("{reject}//input[@name='reason']")))
        .await
        .unwrap()
        .send_keys("the cohort is under embargo")
        .await
        .unwrap();
    submit_and_expect(
        &admin,
        Locator::XPath(&format!("{reject}//button")),
        "Rejected",
    )
    .await;
    let mine = format!("{hk}/negotiations");
    let text = wait_for_text(&researcher, &mine, "TERMINATED", &p.hk).await;
    assert!(text.contains("the cohort is under embargo"), "{text}");

    // The researcher downloads the agreed data to the browser.
    wait_for_text(&researcher, &mine, "FINALIZED", &p.hk).await;
    researcher
        .find(Locator::XPath(&card(
            "Diabetes cohort 2026",
            "//form[@action='/data/download']//button",
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let start = Instant::now();
    let file = loop {
        if let Some(f) = downloaded(&downloads)
            && std::fs::read(&f).is_ok_and(|b| b.len() == data.len())
        {
            break f;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no download; page:\n{}\nHKU log:\n{}",
            main_text(&researcher).await,
            p.hk.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(std::fs::read(&file).unwrap(), data, "{}", file.display());

    // Every action is in the audit logs, as from the CLI.
    let sz_log = audit_events(&p.sz, &tmp.join("sz-audit.jsonl"));
    let events: Vec<Value> = sz_log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for event in ["approval", "rejection"] {
        assert!(
            events
                .iter()
                .any(|e| e["event"] == event && e["actor"] == "admin"),
            "{event} by admin:\n{sz_log}"
        );
    }
    let hk_log = audit_events(&p.hk, &tmp.join("hk-audit.jsonl"));
    assert!(hk_log.contains("\"data-downloaded\""), "{hk_log}");
    let _ = blocked;

    // Signing out ends the session.
    admin
        .find(Locator::Css("form.signout button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The click only starts the sign-out: wait for its answer (the sign-in
    // page) before trying the old session, or the next page can race it.
    let start = std::time::Instant::now();
    while admin.current_url().await.unwrap().path() != "/signin" {
        assert!(start.elapsed() < DEADLINE, "sign-out never finished");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    admin.goto(&offers).await.unwrap();
    assert_eq!(admin.current_url().await.unwrap().path(), "/signin");

    researcher.close().await.unwrap();
    admin.close().await.unwrap();
}

/// One HTTP exchange with curl, a plain client that keeps no cookies of
/// its own: returns (status, headers, body).
fn http(
    dir: &Path,
    method: &str,
    path: &str,
    cookies: &[&str],
    form: &[(&str, &str)],
) -> (u16, String, String) {
    let mut c = Command::new("curl");
    c.args(["-g", "-s", "-i", "--max-time", "20", "-X", method])
        .args(["--cacert", &api_ca(dir)]);
    if !cookies.is_empty() {
        c.args(["-H", &format!("Cookie: {}", cookies.join("; "))]);
    }
    for (k, v) in form {
        c.args(["--data-urlencode", &format!("{k}={v}")]);
    }
    c.arg(format!("{}{path}", console_url(dir)));
    let o = c.output().expect("curl (Debian package curl)");
    assert!(o.status.success(), "curl: {}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    (status, head.to_owned(), body.to_owned())
}

/// The value of cookie `name` set in `headers`, as `name=value`.
fn set_cookie(headers: &str, name: &str) -> Option<(String, String)> {
    headers.lines().find_map(|l| {
        let rest = l
            .strip_prefix("set-cookie: ")
            .or_else(|| l.strip_prefix("Set-Cookie: "))?;
        let pair = rest.split(';').next()?.trim();
        pair.starts_with(&format!("{name}="))
            .then(|| (pair.to_owned(), rest.to_owned()))
    })
}

fn csrf_of(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    body[at..].split('"').next().unwrap().to_owned()
}

/// Signs in with `token`; returns the session cookie and its CSRF token.
fn http_sign_in(dir: &Path, token: &str) -> (u16, Option<String>) {
    let (_, head, body) = http(dir, "GET", "/signin", &[], &[]);
    let (nonce_cookie, _) = set_cookie(&head, "bayspace_signin").unwrap();
    let nonce = csrf_of(&body);
    let (status, head, _) = http(
        dir,
        "POST",
        "/signin",
        &[&nonce_cookie],
        &[("csrf", &nonce), ("token", token)],
    );
    (status, set_cookie(&head, "bayspace_session").map(|c| c.0))
}

#[test]
fn forged_forms_researchers_and_guessed_tokens_are_refused() {
    let space = Space::new();
    let (dir, _, _) = space.member_in(SZ, "mainland:shenzhen", None);
    let node = Node::start(&dir);
    node.wait_for("status", |_| true);
    let admin_token = std::fs::read_to_string(dir.join("admin.token")).unwrap();
    let admin_token = admin_token.trim();

    // A sign-in without the form's value (posted from another site) fails.
    let (status, _, _) = http(&dir, "POST", "/signin", &[], &[("token", admin_token)]);
    assert_eq!(status, 403);

    // The session cookie's attributes.
    let (_, head, body) = http(&dir, "GET", "/signin", &[], &[]);
    let (nonce_cookie, _) = set_cookie(&head, "bayspace_signin").unwrap();
    let (status, head, _) = http(
        &dir,
        "POST",
        "/signin",
        &[&nonce_cookie],
        &[("csrf", &csrf_of(&body)), ("token", admin_token)],
    );
    assert_eq!(status, 303, "{head}");
    let (session, attrs) = set_cookie(&head, "bayspace_session").unwrap();
    for a in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Max-Age=28800",
        "Path=/",
    ] {
        assert!(attrs.contains(a), "{a} missing: {attrs}");
    }
    assert!(head.to_lowercase().contains("location: /"), "{head}");

    // A state-changing form without its CSRF token, or with another, is
    // refused and changes nothing.
    let (status, _, page) = http(&dir, "GET", "/admin/researchers", &[&session], &[]);
    assert_eq!(status, 200);
    let csrf = csrf_of(&page);
    for forged in [
        vec![("name", "Mallory")],
        vec![("name", "Mallory"), ("csrf", "0000")],
    ] {
        let (status, _, body) = http(&dir, "POST", "/admin/researchers/add", &[&session], &forged);
        assert_eq!(status, 403, "{body}");
    }
    let listed = admin_ok(&node, &["researcher", "list"]);
    assert!(!listed.contains("Mallory"), "{listed}");

    // With it, the researcher is added and the token shown once.
    let (status, _, body) = http(
        &dir,
        "POST",
        "/admin/researchers/add",
        &[&session],
        &[("name", "Ada Lovelace"), ("csrf", &csrf)],
    );
    assert_eq!(status, 200, "{body}");
    let at = body.find("id=\"new-token\"").unwrap();
    let token = body[at..]
        .split("value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    assert!(admin_ok(&node, &["researcher", "list"]).contains("Ada Lovelace"));

    // The researcher gets no administrator page, and cannot post to one
    // even with their own valid CSRF token.
    let (status, r_session) = http_sign_in(&dir, &token);
    assert_eq!(status, 303);
    let r_session = r_session.unwrap();
    let (status, _, body) = http(&dir, "GET", "/admin/offers", &[&r_session], &[]);
    assert_eq!(status, 403, "{body}");
    let (_, _, catalog) = http(&dir, "GET", "/catalog", &[&r_session], &[]);
    let r_csrf = csrf_of(&catalog);
    let (status, _, _) = http(
        &dir,
        "POST",
        "/admin/researchers/add",
        &[&r_session],
        &[("name", "Eve"), ("csrf", &r_csrf)],
    );
    assert_eq!(status, 403);
    assert!(!admin_ok(&node, &["researcher", "list"]).contains("Eve"));

    // Signing out ends the session on the server, not only in the browser.
    let (status, _, _) = http(&dir, "POST", "/signout", &[&session], &[("csrf", &csrf)]);
    assert_eq!(status, 303);
    let (status, head, _) = http(&dir, "GET", "/admin/offers", &[&session], &[]);
    assert_eq!(status, 303, "{head}");
    assert!(head.to_lowercase().contains("location: /signin"), "{head}");

    // Guessing tokens is throttled per address, even the right one after.
    for _ in 0..20 {
        assert_eq!(http_sign_in(&dir, "guess").0, 401);
    }
    assert_eq!(http_sign_in(&dir, admin_token).0, 429);
}
