//! The applications guardwire names: each has a category, the hosts that identify
//! it and optional port heuristics. Loaded from TOML (a builtin file, extended by
//! the user's); lookups are allocation-free.

use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use toml::Spanned;

/// The builtin applications file.
pub const BUILTIN_APPS: &str = include_str!("../../../config/apps.toml");

/// Longest host name looked up; longer names (invalid in DNS) match nothing.
const MAX_HOST: usize = 253;

/// An application, as an index into [`Apps`]. Stable across [`Apps::extend`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppId(pub u16);

impl AppId {
    /// No application was identified.
    pub const UNKNOWN: AppId = AppId(0);
}

/// A bad applications file.
#[derive(Debug, thiserror::Error)]
pub enum AppsError {
    /// Not TOML, or not the shape of an applications file (unknown key, wrong type).
    #[error("{origin}:{line}: {msg}")]
    Parse {
        /// The file.
        origin: String,
        /// 1-based line.
        line: usize,
        /// What the TOML parser said.
        msg: String,
    },
    /// A value is refused; `key` names it, e.g. `app[3].ports`.
    #[error("{origin}:{line}: {key}: {msg}")]
    Invalid {
        /// The file.
        origin: String,
        /// 1-based line.
        line: usize,
        /// The key, with the app's index in the file.
        key: String,
        /// Why.
        msg: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDef {
    #[serde(default)]
    app: Vec<AppDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppDef {
    name: Spanned<String>,
    category: Spanned<String>,
    #[serde(default)]
    hosts: Vec<Spanned<String>>,
    #[serde(default)]
    ports: Vec<Spanned<String>>,
    #[serde(default)]
    service: bool,
}

/// A port heuristic: IP protocol and inclusive port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PortRule {
    proto: u8,
    lo: u16,
    hi: u16,
}

/// One application as defined in a file.
#[derive(Clone, Debug)]
struct App {
    name: String,
    category: String,
    hosts: Vec<String>,
    ports: Vec<PortRule>,
    /// A network service (DNS, NTP...): its port names it before anything else.
    service: bool,
    /// 0 for the file first parsed, +1 per `extend`: a later file wins conflicts.
    generation: u32,
}

/// The known applications and the indexes to find them by host and port.
#[derive(Clone, Debug, Default)]
pub struct Apps {
    /// `apps[i]` is `AppId(i + 1)`.
    apps: Vec<App>,
    /// Host suffix (lower case, no trailing dot) to app.
    hosts: HashMap<String, AppId>,
    /// Single-port rules, keyed by (protocol, port).
    ports: HashMap<(u8, u16), AppId>,
    /// Range rules, narrowest first.
    ranges: Vec<(PortRule, AppId)>,
    /// Distinct categories, "unknown" first then sorted.
    categories: Vec<String>,
    /// Index into `categories` per app (same indexing as `apps`).
    category_idx: Vec<usize>,
}

impl Apps {
    /// Parses an applications file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Apps, AppsError> {
        let file: FileDef = toml::from_str(text).map_err(|e| AppsError::Parse {
            origin: origin.to_string(),
            line: e.span().map_or(0, |s| line_of(text, s.start)),
            msg: e.message().trim_end().to_string(),
        })?;
        let bad = |at: usize, key: String, msg: String| AppsError::Invalid {
            origin: origin.to_string(),
            line: line_of(text, at),
            key,
            msg,
        };
        let mut apps = Vec::with_capacity(file.app.len());
        let mut names = HashSet::new();
        let mut hosts: HashMap<String, usize> = HashMap::new();
        for (i, def) in file.app.into_iter().enumerate() {
            let name = def.name.get_ref();
            check_word(name)
                .map_err(|m| bad(def.name.span().start, format!("app[{i}].name"), m))?;
            if !names.insert(name.clone()) {
                return Err(bad(
                    def.name.span().start,
                    format!("app[{i}].name"),
                    format!("app {name:?} is defined twice"),
                ));
            }
            let category = def.category.get_ref();
            check_word(category)
                .map_err(|m| bad(def.category.span().start, format!("app[{i}].category"), m))?;
            let mut app_hosts = Vec::with_capacity(def.hosts.len());
            for h in &def.hosts {
                let at = h.span().start;
                let key = || format!("app[{i}].hosts");
                let host = normalize_host(h.get_ref()).ok_or_else(|| {
                    bad(at, key(), format!("{:?} is not a host name", h.get_ref()))
                })?;
                if let Some(&other) = hosts.get(&host) {
                    let msg = if other == i {
                        format!("{host:?} is listed twice")
                    } else {
                        format!("{host:?} already belongs to app[{other}]")
                    };
                    return Err(bad(at, key(), msg));
                }
                hosts.insert(host.clone(), i);
                app_hosts.push(host);
            }
            let mut ports = Vec::with_capacity(def.ports.len());
            for p in &def.ports {
                let rule = parse_port_rule(p.get_ref())
                    .map_err(|m| bad(p.span().start, format!("app[{i}].ports"), m))?;
                ports.push(rule);
            }
            apps.push(App {
                name: name.clone(),
                category: category.clone(),
                hosts: app_hosts,
                ports,
                service: def.service,
                generation: 0,
            });
        }
        if apps.len() >= usize::from(u16::MAX) {
            return Err(bad(0, "app".into(), "too many apps".into()));
        }
        let mut out = Apps {
            apps,
            ..Apps::default()
        };
        out.reindex();
        Ok(out)
    }

    /// The builtin applications ([`BUILTIN_APPS`]).
    pub fn builtin() -> Apps {
        Apps::parse(BUILTIN_APPS, "apps.toml").expect("the builtin apps.toml parses")
    }

    /// Adds the apps of `other`; an app with the same name as one already here
    /// replaces it (keeping its [`AppId`]). Where hosts or port rules of the two
    /// conflict, `other` wins.
    pub fn extend(&mut self, other: Apps) {
        let generation = self.apps.iter().map(|a| a.generation).max().unwrap_or(0) + 1;
        for mut app in other.apps {
            if self.apps.len() >= usize::from(u16::MAX) - 1 {
                break;
            }
            app.generation = generation;
            match self.apps.iter_mut().find(|a| a.name == app.name) {
                Some(slot) => *slot = app,
                None => self.apps.push(app),
            }
        }
        self.reindex();
    }

    /// The app whose host is `host` or a parent domain of it; the longest such
    /// host wins. Case-insensitive; a trailing dot is ignored.
    pub fn by_host(&self, host: &str) -> Option<AppId> {
        let host = host.strip_suffix('.').unwrap_or(host);
        if host.is_empty() || host.len() > MAX_HOST || !host.is_ascii() {
            return None;
        }
        let mut buf = [0u8; MAX_HOST];
        let lower = &mut buf[..host.len()];
        lower.copy_from_slice(host.as_bytes());
        lower.make_ascii_lowercase();
        // ASCII in, ASCII out.
        let mut name = std::str::from_utf8(lower).ok()?;
        loop {
            if let Some(&id) = self.hosts.get(name) {
                return Some(id);
            }
            name = &name[name.find('.')? + 1..];
        }
    }

    /// The app a port heuristic gives for the server port of a flow; `proto` is
    /// the IP protocol number (6 TCP, 17 UDP). The narrowest matching rule wins.
    pub fn by_port(&self, proto: u8, port: u16) -> Option<AppId> {
        if let Some(&id) = self.ports.get(&(proto, port)) {
            return Some(id);
        }
        self.ranges
            .iter()
            .find(|(r, _)| r.proto == proto && (r.lo..=r.hi).contains(&port))
            .map(|&(_, id)| id)
    }

    /// Is `id` a network service, named by its port before any DNS answer
    /// (its server may share an address with a named site)?
    pub fn is_service(&self, id: AppId) -> bool {
        id.0 != 0
            && self
                .apps
                .get(usize::from(id.0) - 1)
                .is_some_and(|a| a.service)
    }

    /// The app's name; "unknown" for [`AppId::UNKNOWN`] or an id not from here.
    pub fn name(&self, id: AppId) -> &str {
        self.get(id).map_or("unknown", |a| &a.name)
    }

    /// The app's category; "unknown" for [`AppId::UNKNOWN`] or an id not from here.
    pub fn category(&self, id: AppId) -> &str {
        self.get(id).map_or("unknown", |a| &a.category)
    }

    /// The distinct categories, sorted, with "unknown" first (index 0).
    pub fn categories(&self) -> &[String] {
        &self.categories
    }

    /// The index of the app's category in [`Apps::categories`]; 0 for unknown.
    pub fn category_index(&self, id: AppId) -> usize {
        usize::from(id.0)
            .checked_sub(1)
            .and_then(|i| self.category_idx.get(i))
            .copied()
            .unwrap_or(0)
    }

    /// The app named `name`.
    pub fn id_of(&self, name: &str) -> Option<AppId> {
        self.apps
            .iter()
            .position(|a| a.name == name)
            .map(|i| AppId(i as u16 + 1))
    }

    /// Every application name, "unknown" included.
    pub fn names(&self) -> impl Iterator<Item = &str> + Clone {
        (0..=self.apps.len()).map(|i| self.name(AppId(i as u16)))
    }

    /// How many apps there are (not counting unknown).
    pub fn len(&self) -> usize {
        self.apps.len()
    }

    /// Whether there are no apps.
    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }

    fn get(&self, id: AppId) -> Option<&App> {
        usize::from(id.0)
            .checked_sub(1)
            .and_then(|i| self.apps.get(i))
    }

    /// Rebuilds the lookup tables from `apps`.
    fn reindex(&mut self) {
        // Later generations are inserted last so they win conflicts.
        let mut order: Vec<usize> = (0..self.apps.len()).collect();
        order.sort_by_key(|&i| self.apps[i].generation);
        self.hosts.clear();
        self.ports.clear();
        self.ranges.clear();
        for &i in &order {
            let id = AppId(i as u16 + 1);
            let app = &self.apps[i];
            for h in &app.hosts {
                self.hosts.insert(h.clone(), id);
            }
            for r in &app.ports {
                if r.lo == r.hi {
                    self.ports.insert((r.proto, r.lo), id);
                } else {
                    self.ranges.push((*r, id));
                }
            }
        }
        // Stable: among equally narrow ranges the later generation (pushed
        // later) must win, so reverse first, then sort by width.
        self.ranges.reverse();
        self.ranges.sort_by_key(|(r, _)| r.hi - r.lo);

        let mut cats: Vec<String> = self.apps.iter().map(|a| a.category.clone()).collect();
        cats.sort();
        cats.dedup();
        cats.retain(|c| c != "unknown");
        cats.insert(0, "unknown".to_string());
        self.category_idx = self
            .apps
            .iter()
            .map(|a| cats.iter().position(|c| *c == a.category).unwrap_or(0))
            .collect();
        self.categories = cats;
    }
}

/// 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    text.as_bytes()[..at]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// App and category names: they appear in stats and policies.
fn check_word(w: &str) -> Result<(), String> {
    if w.is_empty() || w.len() > 64 {
        return Err(format!("{w:?} must be 1 to 64 characters"));
    }
    if !w
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
    {
        return Err(format!("{w:?} may only hold [a-z0-9_.-]"));
    }
    if w == "unknown" {
        return Err("\"unknown\" is reserved".into());
    }
    Ok(())
}

/// Lower case, without a trailing dot; None if not a plausible host name.
fn normalize_host(h: &str) -> Option<String> {
    let h = h.strip_suffix('.').unwrap_or(h);
    let ok = !h.is_empty()
        && h.len() <= MAX_HOST
        && !h.starts_with('.')
        && !h.contains("..")
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    ok.then(|| h.to_ascii_lowercase())
}

/// `tcp/N`, `udp/N`, `tcp/N-M`, `udp/N-M`.
fn parse_port_rule(s: &str) -> Result<PortRule, String> {
    let (proto, range) = match s.split_once('/') {
        Some(("tcp", r)) => (6, r),
        Some(("udp", r)) => (17, r),
        _ => {
            return Err(format!(
                "{s:?} is not \"tcp/PORT\", \"udp/PORT\" or \"tcp/LOW-HIGH\""
            ));
        }
    };
    let port = |p: &str| -> Result<u16, String> {
        match p.parse::<u16>() {
            Ok(n) if n > 0 && !p.starts_with('+') => Ok(n),
            _ => Err(format!("{s:?} is not a port")),
        }
    };
    let (lo, hi) = match range.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(range)?;
            (p, p)
        }
    };
    if lo > hi {
        return Err(format!("{s:?}: the range is empty"));
    }
    Ok(PortRule { proto, lo, hi })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_parses() {
        let apps = Apps::builtin();
        assert!(apps.len() >= 30);
        let yt = apps.id_of("youtube").unwrap();
        assert_eq!(apps.name(yt), "youtube");
        assert_eq!(apps.category(yt), "streaming");
        assert!(!apps.is_service(yt));
        assert!(apps.is_service(apps.id_of("dns").unwrap()));
        assert!(!apps.is_service(AppId::UNKNOWN));
        assert_eq!(apps.categories()[0], "unknown");
        assert!(apps.categories()[1..].windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            apps.categories()[apps.category_index(yt)],
            apps.category(yt)
        );
        for name in ["blocked-site", "allowed-site"] {
            let id = apps.id_of(name).unwrap();
            assert_eq!(apps.category(id), "test");
        }
        assert_eq!(apps.by_host("blocked.example"), apps.id_of("blocked-site"));
        assert_eq!(apps.by_host("allowed.example"), apps.id_of("allowed-site"));
    }

    #[test]
    fn unknown_id() {
        let apps = Apps::builtin();
        assert_eq!(apps.name(AppId::UNKNOWN), "unknown");
        assert_eq!(apps.category(AppId::UNKNOWN), "unknown");
        assert_eq!(apps.category_index(AppId::UNKNOWN), 0);
        assert_eq!(apps.name(AppId(u16::MAX)), "unknown");
    }

    #[test]
    fn suffix_matching() {
        let apps = Apps::builtin();
        let yt = apps.id_of("youtube");
        assert_eq!(apps.by_host("youtube.com"), yt);
        assert_eq!(apps.by_host("www.youtube.com"), yt);
        assert_eq!(apps.by_host("WWW.YouTube.COM."), yt);
        assert_eq!(apps.by_host("r3---sn-abc.googlevideo.com"), yt);
        assert_eq!(apps.by_host("notyoutube.com"), None);
        assert_eq!(apps.by_host("youtube.com.evil.net"), None);
        assert_eq!(apps.by_host("com"), None);
        assert_eq!(apps.by_host(""), None);
        assert_eq!(apps.by_host("."), None);
        assert_eq!(apps.by_host(&"a.".repeat(200)), None);
        assert_eq!(apps.by_host("wẃw.youtube.com"), None);
        // The longest suffix wins: mail.google.com is gmail, not google.
        assert_eq!(apps.by_host("mail.google.com"), apps.id_of("gmail"));
        assert_eq!(apps.by_host("x.mail.google.com"), apps.id_of("gmail"));
        assert_eq!(apps.by_host("www.google.com"), apps.id_of("google"));
    }

    #[test]
    fn port_heuristics() {
        let apps = Apps::builtin();
        assert_eq!(apps.by_port(17, 53), apps.id_of("dns"));
        assert_eq!(apps.by_port(6, 53), apps.id_of("dns"));
        assert_eq!(apps.by_port(6, 22), apps.id_of("ssh"));
        assert_eq!(apps.by_port(6, 80), apps.id_of("http"));
        assert_eq!(apps.by_port(6, 443), apps.id_of("tls"));
        assert_eq!(apps.by_port(17, 27015), apps.id_of("steam"));
        assert_eq!(apps.by_port(17, 22), None);
        assert_eq!(apps.by_port(1, 53), None);
    }

    #[test]
    fn narrowest_range_wins() {
        let apps = Apps::parse(
            "[[app]]\nname='wide'\ncategory='c'\nports=['udp/1000-2000']\n\
             [[app]]\nname='narrow'\ncategory='c'\nports=['udp/1500-1510']\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(apps.by_port(17, 1505), apps.id_of("narrow"));
        assert_eq!(apps.by_port(17, 1000), apps.id_of("wide"));
        assert_eq!(apps.by_port(17, 2001), None);
    }

    fn err(text: &str) -> String {
        Apps::parse(text, "apps.toml").unwrap_err().to_string()
    }

    #[test]
    fn errors_name_file_and_line() {
        let ok = "[[app]]\nname = \"a\"\ncategory = \"c\"\n";
        assert_eq!(
            err(&format!(
                "{ok}[[app]]\nname = \"b\"\ncategory = \"c\"\nports = [\"tcp/70000\"]\n"
            )),
            "apps.toml:7: app[1].ports: \"tcp/70000\" is not a port"
        );
        assert_eq!(
            err(&format!("{ok}[[app]]\nname = \"a\"\ncategory = \"d\"\n")),
            "apps.toml:5: app[1].name: app \"a\" is defined twice"
        );
        let e = err(&format!("{ok}colour = \"red\"\n"));
        assert!(e.starts_with("apps.toml:4: unknown field `colour`"), "{e}");
        let e = err("[[app]]\nname = \"a\"\ncategory = \n");
        assert!(e.starts_with("apps.toml:3: "), "{e}");
        let e = err("[[app]]\nname = \"a\"\n");
        assert!(
            e.starts_with("apps.toml:1: missing field `category`"),
            "{e}"
        );
        assert_eq!(
            err("[[app]]\nname = \"A b\"\ncategory = \"c\"\n"),
            "apps.toml:2: app[0].name: \"A b\" may only hold [a-z0-9_.-]"
        );
        assert_eq!(
            err("[[app]]\nname = \"a\"\ncategory = \"c\"\nhosts = [\"a b.com\"]\n"),
            "apps.toml:4: app[0].hosts: \"a b.com\" is not a host name"
        );
        assert_eq!(
            err(&format!(
                "{ok}hosts = [\"x.com\"]\n[[app]]\nname = \"b\"\ncategory = \"c\"\n\nhosts = [\"X.com.\"]\n"
            )),
            "apps.toml:9: app[1].hosts: \"x.com\" already belongs to app[0]"
        );
        for bad in ["tcp/0", "tcp/10-5", "sctp/5", "tcp/", "tcp/+5", "tcp/1-2-3"] {
            let e = err(&format!("{ok}ports = [\"{bad}\"]\n"));
            assert!(e.starts_with("apps.toml:4: app[0].ports: "), "{e}");
        }
        assert_eq!(
            err("[[app]]\nname = \"unknown\"\ncategory = \"c\"\n"),
            "apps.toml:2: app[0].name: \"unknown\" is reserved"
        );
    }

    #[test]
    fn empty_file_is_empty() {
        let apps = Apps::parse("# nothing\n", "x").unwrap();
        assert!(apps.is_empty());
        assert_eq!(apps.categories(), ["unknown"]);
    }

    #[test]
    fn extend_overrides_by_name() {
        let mut apps = Apps::builtin();
        let n = apps.len();
        let yt = apps.id_of("youtube").unwrap();
        let user = Apps::parse(
            "[[app]]\nname = \"youtube\"\ncategory = \"video\"\nhosts = [\"yt.example\"]\n\
             [[app]]\nname = \"intranet\"\ncategory = \"work\"\nhosts = [\"corp.example\", \"x.com\"]\n\
             ports = [\"tcp/443\"]\n",
            "user.toml",
        )
        .unwrap();
        apps.extend(user);
        assert_eq!(apps.len(), n + 1);
        assert_eq!(apps.id_of("youtube"), Some(yt));
        assert_eq!(apps.category(yt), "video");
        assert_eq!(apps.by_host("www.yt.example"), Some(yt));
        // The replaced definition's hosts are gone.
        assert_eq!(apps.by_host("youtube.com"), None);
        let intranet = apps.id_of("intranet");
        assert_eq!(apps.by_host("a.corp.example"), intranet);
        // Conflicts go to the later file.
        assert_eq!(apps.by_host("x.com"), intranet);
        assert_eq!(apps.by_port(6, 443), intranet);
        assert!(apps.categories().iter().any(|c| c == "work"));
        assert_eq!(
            apps.categories()[apps.category_index(yt)],
            "video".to_string()
        );
    }
}
