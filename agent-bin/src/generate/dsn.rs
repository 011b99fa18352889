//! libpq connection strings, both forms: `key=value …` (values in single quotes
//! with backslash escapes) and `postgresql://user:password@host:port/dbname?key=value`.

use std::collections::BTreeMap;

/// The parameters of `dsn`, or what is wrong with it.
pub fn parse_dsn(dsn: &str) -> Result<BTreeMap<String, String>, String> {
    let dsn = dsn.trim();
    if let Some(rest) = dsn
        .strip_prefix("postgresql://")
        .or_else(|| dsn.strip_prefix("postgres://"))
    {
        return parse_url(rest);
    }
    parse_pairs(dsn)
}

fn parse_pairs(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("missing \"=\" after \"{key}\""));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated quoted value of \"{key}\"")),
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        if key.is_empty() {
            return Err("empty parameter name".into());
        }
        out.insert(key, value);
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in \"{s}\""))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("\"{s}\" is not UTF-8"))
}

fn parse_url(rest: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    let (authority, db) = match main.split_once('/') {
        Some((a, d)) => (a, Some(d)),
        None => (main, None),
    };
    let hostport = match authority.rsplit_once('@') {
        Some((userinfo, hp)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                out.insert("user".into(), percent_decode(user)?);
            }
            if let Some(p) = password {
                out.insert("password".into(), percent_decode(p)?);
            }
            hp
        }
        None => authority,
    };
    if !hostport.is_empty() {
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("unterminated \"[\" in \"{hostport}\""))?;
            (h, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if !host.is_empty() {
            out.insert("host".into(), percent_decode(host)?);
        }
        if let Some(p) = port.filter(|p| !p.is_empty()) {
            out.insert("port".into(), p.to_string());
        }
    }
    if let Some(d) = db.filter(|d| !d.is_empty()) {
        out.insert("dbname".into(), percent_decode(d)?);
    }
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("missing \"=\" in \"{pair}\""))?;
        out.insert(percent_decode(k)?, percent_decode(v)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::parse_dsn;

    #[test]
    fn both_forms() {
        let m = parse_dsn("host=/tmp port = 5433 user=postgres password='a \\'b' sslmode=disable")
            .unwrap();
        assert_eq!(m["host"], "/tmp");
        assert_eq!(m["port"], "5433");
        assert_eq!(m["password"], "a 'b");
        assert_eq!(m["sslmode"], "disable");
        let m = parse_dsn("postgresql://me:p%40ss@[::1]:5444/db?sslmode=require").unwrap();
        assert_eq!(m["user"], "me");
        assert_eq!(m["password"], "p@ss");
        assert_eq!(m["host"], "::1");
        assert_eq!(m["port"], "5444");
        assert_eq!(m["dbname"], "db");
        assert_eq!(m["sslmode"], "require");
        assert!(parse_dsn("host").is_err());
        assert!(parse_dsn("password='open").is_err());
    }
}
