//! The dashboard in a real browser (Debian's chromium through chromedriver) against a
//! real 3-node cluster: the page shows the members with their roles, follows a
//! failover live (no reload), switches over from the page, and refuses a wrong
//! password. Screenshots of each step go to `target/ui-screenshots/`.

mod support;
mod ui_support;

use std::path::PathBuf;
use std::time::Duration;
use support::{wait_until, Cluster, Extra, FAST};
use ui_support::Browser;

const BOOT: Duration = Duration::from_secs(90);
const LIVE: Duration = Duration::from_secs(60);

fn shots_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("ui-screenshots")
}

/// `[name, role]` of every member card on the page, in page order.
const CARDS: &str = "return [...document.querySelectorAll('#members .member')]
    .map(m => [m.dataset.name, m.dataset.role]);";

#[test]
fn dashboard_shows_follows_and_acts() {
    let mut c = Cluster::new_with(
        3,
        &FAST,
        "",
        // A tag for the page to show.
        |i| {
            if i == 2 {
                "  zone: east\n".into()
            } else {
                String::new()
            }
        },
        |_| Extra {
            restapi: "  authentication:\n    username: admin\n    password: s3cret\n".into(),
            ..Extra::default()
        },
    );
    c.start_all();
    let p = c.wait_primary(BOOT).expect("a primary");
    let replicas: Vec<usize> = (0..3).filter(|&i| i != p).collect();
    for &r in &replicas {
        assert!(
            c.wait_replica(r, BOOT),
            "{} never streamed",
            c.nodes[r].name
        );
    }
    // The page is served by a replica, which survives the primary's death.
    let served = replicas[0];
    let browser = Browser::start(&shots_dir());
    browser.goto(&format!("http://127.0.0.1:{}/ui", c.nodes[served].api_port));
    browser.js("window.__errors = []; window.addEventListener('error', e => window.__errors.push(String(e.message))); return null;");

    // 1. Three members with the right roles.
    let primary = c.nodes[p].name.clone();
    let three = browser.wait_js(
        LIVE,
        &format!(
            "const cards = (() => {{ {CARDS} }})();
             return cards.length === 3
               && cards.filter(c => c[1] === 'replica').length === 2
               && cards.some(c => c[0] === {primary:?} && c[1] === 'leader') ? cards : null;"
        ),
    );
    if three.is_none() {
        browser.screenshot("failed-three-members");
        panic!(
            "page never showed 3 members with {primary} leading: {} (page: {}; script errors: {})",
            browser.js(CARDS),
            browser.js("return document.body.innerText;"),
            browser.js("return window.__errors || null;"),
        );
    }
    // Every replica is explained (electable here).
    let explained = browser.js(
        "return [...document.querySelectorAll('#members .member .why')].map(e => e.textContent);",
    );
    assert_eq!(
        explained,
        serde_json::json!([
            "electable: could take over now",
            "electable: could take over now"
        ])
    );
    browser.screenshot("1-three-members");
    // The same rule outside the browser.
    let (ok, out) = c.ctl(&["list", "--explain", "-f", "json"]);
    assert!(ok, "{out}");
    let rows: serde_json::Value = serde_json::from_str(&out).expect("list json");
    let electable: Vec<(String, String)> = rows
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["Member"].as_str().unwrap_or_default().to_string(),
                r["Electable"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let mut want: Vec<(String, String)> = (0..3)
        .map(|i| {
            let e = if i == p { "" } else { "yes" };
            (c.nodes[i].name.clone(), e.to_string())
        })
        .collect();
    want.sort();
    assert_eq!(electable, want, "{out}");

    // 2. A wrong password is refused, and nothing changes.
    browser.type_into("#cred-user", "admin");
    browser.type_into("#cred-pass", "wrong");
    browser.click("#cred-save");
    browser.click("#pause-go");
    browser.accept_dialog();
    let refused = browser.wait_js(
        Duration::from_secs(20),
        "const t = document.getElementById('result').textContent;
         return t.startsWith('401') ? t : null;",
    );
    assert!(
        refused.is_some(),
        "wrong password not refused: {}",
        browser.js("return document.getElementById('result').textContent;")
    );
    let config = c.api(served, "/config").expect("/config").1;
    assert_ne!(
        config["pause"], true,
        "a refused request paused the cluster"
    );
    browser.screenshot("2-wrong-password-refused");

    // 3. kill -9 of the primary's agent and postmaster: the page follows without reload.
    browser.js("window.__sameDocument = true; return null;");
    c.kill_agent(p);
    c.kill_postmaster(p);
    let new_leader = browser.wait_js(
        LIVE,
        &format!(
            "const l = document.getElementById('leader-name').textContent;
             return l !== {primary:?} && l !== 'none' && l !== '?' ? l : null;"
        ),
    );
    let new_leader = new_leader
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("page never showed a new leader: {}", browser.js(CARDS)));
    assert!(
        replicas.iter().any(|&r| c.nodes[r].name == new_leader),
        "unexpected leader {new_leader}"
    );
    assert_eq!(
        browser.js("return window.__sameDocument === true;"),
        true,
        "the page was reloaded"
    );
    let logged = browser.wait_js(
        Duration::from_secs(10),
        &format!(
            "const t = document.getElementById('log').textContent;
             return t.includes('leader changed from {primary} to {new_leader}')
               || t.includes('{new_leader} took the leader lock') ? t : null;"
        ),
    );
    assert!(
        logged.is_some(),
        "event log lacks the leader change: {}",
        browser.js("return document.getElementById('log').textContent;")
    );
    browser.screenshot("3-failover-followed");

    // 4. Switchover from the page to the other survivor, with the right password.
    let candidate = replicas
        .iter()
        .map(|&r| c.nodes[r].name.clone())
        .find(|n| *n != new_leader)
        .expect("candidate");
    let cand_idx = c.index_of(&candidate);
    let streaming = wait_until(LIVE, || {
        let cl = c.api(served, "/cluster")?.1;
        cl["members"].as_array()?.iter().find(|m| {
            m["name"] == candidate.as_str() && m["state"] == "streaming" && m["electable"] == true
        })?;
        Some(())
    });
    assert!(
        streaming.is_some(),
        "{candidate} never followed {new_leader}"
    );
    assert!(c.wait_replica(cand_idx, LIVE));
    browser
        .wait_js(
            LIVE,
            &format!(
                "return [...document.querySelectorAll('#switchover-candidate option')]
               .some(o => o.value === {candidate:?});"
            ),
        )
        .expect("candidate offered");
    browser.type_into("#cred-pass", "s3cret");
    browser.click("#cred-save");
    browser.js(&format!(
        "document.getElementById('switchover-candidate').value = {candidate:?}; return null;"
    ));
    browser.click("#switchover-go");
    let question = browser.accept_dialog();
    assert!(
        question.contains(&format!(
            "demoting current leader {new_leader} to {candidate}"
        )),
        "{question}"
    );
    let done = browser.wait_js(
        LIVE,
        &format!(
            "const r = document.getElementById('result').textContent;
             const l = document.getElementById('leader-name').textContent;
             return r.startsWith('200') && l === {candidate:?} ? r : null;"
        ),
    );
    assert!(
        done.is_some(),
        "switchover from the page failed: {} (leader shown: {})",
        browser.js("return document.getElementById('result').textContent;"),
        browser.js("return document.getElementById('leader-name').textContent;")
    );
    assert_eq!(c.leader().as_deref(), Some(candidate.as_str()));
    browser.screenshot("4-switchover-done");
}
