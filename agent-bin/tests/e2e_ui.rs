//! The dashboard in a real browser (Debian's chromium through chromedriver) against a
//! real 3-node cluster: the page shows the members with their roles and replay lag,
//! refuses a wrong password, edits the dynamic config, pauses and resumes, restarts
//! and reinitializes a member other than the one serving it, follows a failover live
//! (no reload), switches over from the page, and fits a phone's screen. Screenshots
//! of each step go to `target/ui-screenshots/`.

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

/// `(member, electability)` as `fullautoctl list --explain` shows it (`yes`, `no: …`,
/// empty for the leader), sorted by member.
fn ctl_electability(c: &Cluster) -> Vec<(String, String)> {
    let (ok, out) = c.ctl(&["list", "--explain", "-f", "json"]);
    assert!(ok, "{out}");
    let rows: serde_json::Value = serde_json::from_str(&out).expect("list json");
    let mut rows: Vec<(String, String)> = rows
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
    rows.sort();
    rows
}

/// The same from the page's member cards, in `fullautoctl`'s words.
fn page_electability(browser: &Browser) -> Vec<(String, String)> {
    let cards = browser.js(
        "return [...document.querySelectorAll('#members .member')].map(m => {
           const w = m.querySelector('.why');
           return [m.dataset.name, w ? w.textContent : ''];
         });",
    );
    let mut rows: Vec<(String, String)> = cards
        .as_array()
        .expect("cards")
        .iter()
        .map(|c| {
            let why = c[1].as_str().unwrap_or_default();
            let said = if why == "electable: could take over now" {
                "yes".to_string()
            } else if let Some(reasons) = why.strip_prefix("not electable: ") {
                format!("no: {reasons}")
            } else {
                why.to_string()
            };
            (c[0].as_str().unwrap_or_default().to_string(), said)
        })
        .collect();
    rows.sort();
    rows
}

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
    // Every replica is explained (electable here). A replica that streams may still
    // publish its clone's "creating replica" state for a cycle: wait for the page to
    // show both electable, then say what it showed if it never did.
    const WHY: &str =
        "return [...document.querySelectorAll('#members .member .why')].map(e => e.textContent);";
    let explained = browser
        .wait_js(
            LIVE,
            &format!(
                "const why = (() => {{ {WHY} }})();
                 return why.length === 2 && why.every(w => w.startsWith('electable')) ? why : null;"
            ),
        )
        .unwrap_or_else(|| browser.js(WHY));
    assert_eq!(
        explained,
        serde_json::json!([
            "electable: could take over now",
            "electable: could take over now"
        ])
    );
    browser.screenshot("1-three-members");
    // Everything the page loaded came from the agent (nothing from elsewhere).
    let resources = browser.js(
        "return performance.getEntriesByType('resource').map(r => r.name)
           .concat([location.href]);",
    );
    let origin = format!("http://127.0.0.1:{}/", c.nodes[served].api_port);
    assert!(
        resources.as_array().is_some_and(|r| r
            .iter()
            .all(|u| u.as_str().is_some_and(|u| u.starts_with(&origin)))),
        "resources from elsewhere: {resources}"
    );
    // For the report, not asserted (tests do not time things): how long the page took.
    eprintln!(
        "page load (request to last byte, whole load) in ms: {}",
        browser.js(
            "const n = performance.getEntriesByType('navigation')[0];
             return n ? [Math.round(n.responseEnd - n.requestStart), Math.round(n.duration)] : null;"
        )
    );
    // The same rule outside the browser.
    let mut want: Vec<(String, String)> = (0..3)
        .map(|i| {
            let e = if i == p { "" } else { "yes" };
            (c.nodes[i].name.clone(), e.to_string())
        })
        .collect();
    want.sort();
    assert_eq!(ctl_electability(&c), want);
    assert_eq!(page_electability(&browser), want);

    // 1b. Replay lag in seconds: with replay paused on a replica (not the serving
    // one), its card shows the age of the last replayed commit, as /cluster does.
    let other = replicas[1];
    let other_name = c.nodes[other].name.clone();
    c.sql(
        p,
        "CREATE TABLE ui_lag(v int); INSERT INTO ui_lag VALUES (1)",
    )
    .expect("write on the primary");
    wait_until(LIVE, || {
        (c.sql(other, "SELECT count(*) FROM ui_lag").ok()? == "1").then_some(())
    })
    .expect("the row reached the replica");
    c.sql(other, "SELECT pg_wal_replay_pause()")
        .expect("pause replay");
    c.sql(p, "INSERT INTO ui_lag VALUES (2)")
        .expect("write on the primary");
    let card_lag = |cmp: &str| {
        format!(
            "const m = document.querySelector('#members .member[data-name=\"{other_name}\"]');
             const s = m && m.dataset.lagSeconds;
             return s !== undefined && Number(s) {cmp} ? [Number(s), m.querySelector('.lag-seconds').textContent] : null;"
        )
    };
    let shown = browser.wait_js(LIVE, &card_lag("> 0"));
    assert!(
        shown.is_some(),
        "no replay lag in seconds shown for {other_name}: {}",
        browser.js("return document.getElementById('members').innerText;")
    );
    let cluster = c.api(served, "/cluster").expect("/cluster").1;
    let published = cluster["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == other_name.as_str()))
        .map(|m| m["replay_lag_seconds"].clone());
    assert!(
        published
            .as_ref()
            .and_then(|v| v.as_f64())
            .is_some_and(|s| s > 0.0),
        "/cluster replay_lag_seconds of {other_name}: {published:?}"
    );
    browser.screenshot("1b-replay-lag");
    c.sql(other, "SELECT pg_wal_replay_resume()")
        .expect("resume replay");
    assert!(
        browser.wait_js(LIVE, &card_lag("=== 0")).is_some(),
        "replay lag never went back to 0: {}",
        browser.js("return document.getElementById('members').innerText;")
    );

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

    // 2b. With the right password: a dynamic config change, then pause and resume,
    // each in the event log without a reload.
    browser.js("window.__sameDocument = true; return null;");
    browser.type_into("#cred-pass", "s3cret");
    browser.click("#cred-save");
    browser.type_into("#config-patch", r#"{"maximum_lag_on_failover": 2097152}"#);
    browser.click("#config-go");
    browser.accept_dialog();
    let log_has = |what: &str| {
        format!(
            "const t = document.getElementById('log').textContent;
             return t.includes({what:?}) ? t : null;"
        )
    };
    assert!(
        browser.wait_js(LIVE, &log_has("-> 2097152")).is_some(),
        "config change not in the event log: {} (result: {})",
        browser.js("return document.getElementById('log').textContent;"),
        browser.js("return document.getElementById('result').textContent;")
    );
    assert_eq!(
        c.api(served, "/config").expect("/config").1["maximum_lag_on_failover"],
        2097152
    );
    browser.click("#pause-go");
    browser.accept_dialog();
    let paused = browser.wait_js(
        LIVE,
        "return !document.getElementById('paused').hidden
           && document.getElementById('log').textContent.includes('maintenance mode on');",
    );
    assert!(paused.is_some(), "pause not shown");
    assert_eq!(c.api(served, "/config").expect("/config").1["pause"], true);
    // Paused, no replica may take over: the page and `fullautoctl list --explain`
    // give the same reason (one rule in ha-core).
    let blocked = wait_until(LIVE, || {
        let page = page_electability(&browser);
        page.iter()
            .filter(|(_, e)| e.starts_with("no: paused"))
            .count()
            .eq(&2)
            .then_some(page)
    })
    .expect("the page never said why the replicas are not electable while paused");
    assert_eq!(ctl_electability(&c), blocked);
    browser.click("#resume-go");
    let resumed = browser.wait_js(
        LIVE,
        "return document.getElementById('paused').hidden
           && document.getElementById('log').textContent.includes('maintenance mode off');",
    );
    assert!(resumed.is_some(), "resume not shown");
    assert_eq!(
        browser.js("return window.__sameDocument === true;"),
        true,
        "the page was reloaded"
    );

    // 2c. Restart, then reinitialize, a member other than the one serving the page:
    // the serving agent forwards to that member's API with its own credentials.
    let pid_before = c.postmaster_pid(other).expect("postmaster of the replica");
    browser.js(&format!(
        "document.getElementById('act-member').value = {other_name:?}; return null;"
    ));
    browser.click("#restart-go");
    let question = browser.accept_dialog();
    assert!(question.contains(&other_name), "{question}");
    let restarted = browser.wait_js(
        LIVE,
        "const r = document.getElementById('result').textContent;
         return r.startsWith('200') ? r : null;",
    );
    assert!(
        restarted.is_some(),
        "restart of {other_name} from the page failed: {}",
        browser.js("return document.getElementById('result').textContent;")
    );
    let pid_restarted = c.postmaster_pid(other);
    assert!(
        pid_restarted.is_some_and(|pid| pid != pid_before),
        "{other_name}'s postmaster was not restarted ({pid_before} -> {pid_restarted:?})"
    );
    // A file that only the old data directory has.
    let marker = c.nodes[other].data_dir.join("ui-reinit-marker");
    std::fs::write(&marker, "gone after a reinit").expect("marker");
    browser.js("document.getElementById('result').textContent = ''; return null;");
    browser.click("#reinit-go");
    let question = browser.accept_dialog();
    assert!(question.contains(&other_name), "{question}");
    let reinit = browser.wait_js(
        LIVE,
        "const r = document.getElementById('result').textContent;
         return r.startsWith('200') ? r : null;",
    );
    assert!(
        reinit.is_some(),
        "reinitialize of {other_name} from the page failed: {}",
        browser.js("return document.getElementById('result').textContent;")
    );
    assert!(
        wait_until(LIVE, || (!marker.exists()).then_some(())).is_some(),
        "{other_name}'s data directory was not replaced"
    );
    assert!(
        c.wait_replica(other, LIVE),
        "{other_name} never streamed again"
    );
    let back = browser.wait_js(
        LIVE,
        &format!(
            "const m = document.querySelector('#members .member[data-name=\"{other_name}\"]');
             return m && m.dataset.state === 'streaming';"
        ),
    );
    assert!(
        back.is_some(),
        "the page never showed {other_name} streaming again"
    );
    browser.screenshot("2c-other-member-reinitialized");

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
    // The demotion is in the event log, the failover in the timeline history.
    assert!(
        browser
            .wait_js(
                LIVE,
                &log_has(&format!("{new_leader}: role leader -> replica"))
            )
            .is_some(),
        "no demotion of {new_leader} in the event log: {}",
        browser.js("return document.getElementById('log').textContent;")
    );
    let history_rows = browser.wait_js(
        LIVE,
        "const n = document.querySelectorAll('#history tbody tr').length; return n >= 2 ? n : null;",
    );
    assert!(
        history_rows.is_some(),
        "timeline history rows after a failover and a switchover: {}",
        browser.js("return document.getElementById('history').innerText;")
    );
    browser.screenshot("4-switchover-done");

    // 5. A phone's screen: everything fits its width (no sideways scrolling).
    browser.set_window_size(390, 844);
    let fits = browser.wait_js(
        Duration::from_secs(10),
        "return window.innerWidth <= 400
           && document.documentElement.scrollWidth <= window.innerWidth;",
    );
    assert!(
        fits.is_some(),
        "the page is wider than a phone: {}",
        browser.js("return [window.innerWidth, document.documentElement.scrollWidth];")
    );
    browser.screenshot("5-phone");
}
