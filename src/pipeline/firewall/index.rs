//! Tuple-space search over the rules.
//!
//! Rules are grouped by key shape (which fields they constrain and how wide),
//! each shape gets one hash table from the masked key to the rule indices
//! (ascending) that have exactly that key. A flow is looked up once per shape;
//! candidates are checked in full, since a key says nothing about direction,
//! port ranges or apps. Shapes are visited by their lowest rule index, so once
//! a match is found every shape that cannot beat it is skipped. Port ranges
//! leave the port out of the key and are checked on the candidates; rules whose
//! key combinations would be too many to enumerate go to a residual list that
//! is scanned.

use super::{FlowFacts, Rule, addr_bits, prefix_mask};
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// Most table entries one rule may expand to (workloads x src x dst x ports)
/// before it is scanned instead. Small under test so that the property tests
/// exercise the residual list too.
const MAX_EXPANSION: usize = if cfg!(test) { 8 } else { 1024 };

/// A fast multiply-rotate hash. Only rule files (trusted) insert keys, so a flow
/// cannot make buckets collide; it can only probe what is there.
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

const K: u64 = 0xf135_7aea_2e62_a9c5;

impl FastHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(26) ^ w).wrapping_mul(K);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap_or([0; 8])));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b));
        }
    }
    #[inline]
    fn write_u8(&mut self, v: u8) {
        self.add(v as u64);
    }
    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.add(v as u64);
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.add(v);
    }
    #[inline]
    fn write_usize(&mut self, v: usize) {
        self.add(v as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // Fold the high bits down: hashbrown picks buckets from the low bits and
        // tags from the top seven.
        let m = (self.0 as u128).wrapping_mul(K as u128);
        (m as u64) ^ ((m >> 64) as u64)
    }
}

/// A `HashMap` with [`FastHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// Which fields a group of rules constrains. Address parts are (is v6, length).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct KeyShape {
    src: Option<(bool, u8)>,
    dst: Option<(bool, u8)>,
    proto: bool,
    src_port: bool,
    dst_port: bool,
    scoped: bool,
}

/// A flow or rule reduced to one shape; fields the shape ignores are 0.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    src: u128,
    dst: u128,
    workload: u32,
    proto: u8,
    src_port: u16,
    dst_port: u16,
}

impl Hash for Key {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u64(
            (self.workload as u64) << 40
                | (self.proto as u64) << 32
                | (self.src_port as u64) << 16
                | self.dst_port as u64,
        );
        h.write_u64(self.src as u64);
        h.write_u64((self.src >> 64) as u64);
        h.write_u64(self.dst as u64);
        h.write_u64((self.dst >> 64) as u64);
    }
}

struct Table {
    shape: KeyShape,
    src_mask: u128,
    dst_mask: u128,
    /// Lowest rule index in the table: once a match at or below it is found the
    /// table cannot improve on it.
    min: u32,
    map: FastMap<Key, Box<[u32]>>,
}

/// The index over one class of rules (deciding or logging).
pub(crate) struct Index {
    /// By ascending `min`.
    tables: Vec<Table>,
    /// Rules scanned in order, ascending.
    pub(super) residual: Box<[u32]>,
}

impl fmt::Debug for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Index")
            .field("shapes", &self.tables.len())
            .field(
                "keys",
                &self.tables.iter().map(|t| t.map.len()).sum::<usize>(),
            )
            .field("residual", &self.residual.len())
            .finish()
    }
}

/// The exact ports of a port condition, or `None` (left out of the key) when
/// it is "any" or contains a real range.
fn exact_ports(ports: &[(u16, u16)]) -> Option<Vec<u16>> {
    if ports.is_empty() || ports.iter().any(|&(lo, hi)| lo != hi) {
        return None;
    }
    Some(ports.iter().map(|&(p, _)| p).collect())
}

impl Index {
    /// Indexes the rules `pick` selects.
    pub(crate) fn build(rules: &[Rule], pick: impl Fn(&Rule) -> bool) -> Index {
        let mut tables: HashMap<KeyShape, HashMap<Key, Vec<u32>>> = HashMap::new();
        let mut residual = Vec::new();
        for (i, r) in rules.iter().enumerate().filter(|(_, r)| pick(r)) {
            let i = i as u32;
            let workloads: Vec<Option<u32>> = match &r.scope {
                super::Scope::Any => vec![None],
                s => s.ids().map(Some).collect(),
            };
            let srcs: Vec<_> = if r.src.is_empty() {
                vec![None]
            } else {
                r.src.iter().map(Some).collect()
            };
            let dsts: Vec<_> = if r.dst.is_empty() {
                vec![None]
            } else {
                r.dst.iter().map(Some).collect()
            };
            let sports = exact_ports(&r.src_ports);
            let dports = exact_ports(&r.dst_ports);
            let sp: Vec<Option<u16>> =
                sports.map_or(vec![None], |v| v.into_iter().map(Some).collect());
            let dp: Vec<Option<u16>> =
                dports.map_or(vec![None], |v| v.into_iter().map(Some).collect());
            // An empty scope (a label nobody has) never matches: nothing to index.
            let n = workloads.len() * srcs.len() * dsts.len() * sp.len() * dp.len();
            if n > MAX_EXPANSION {
                residual.push(i);
                continue;
            }
            for &w in &workloads {
                for s in &srcs {
                    for d in &dsts {
                        for &sport in &sp {
                            for &dport in &dp {
                                let shape = KeyShape {
                                    src: s.map(|p| (p.v6, p.len)),
                                    dst: d.map(|p| (p.v6, p.len)),
                                    proto: r.proto.is_some(),
                                    src_port: sport.is_some(),
                                    dst_port: dport.is_some(),
                                    scoped: w.is_some(),
                                };
                                let key = Key {
                                    src: s.map_or(0, |p| p.bits),
                                    dst: d.map_or(0, |p| p.bits),
                                    workload: w.unwrap_or(0),
                                    proto: r.proto.unwrap_or(0),
                                    src_port: sport.unwrap_or(0),
                                    dst_port: dport.unwrap_or(0),
                                };
                                let list = tables.entry(shape).or_default().entry(key).or_default();
                                // The same key twice (a repeated prefix) needs one entry.
                                if list.last() != Some(&i) {
                                    list.push(i);
                                }
                            }
                        }
                    }
                }
            }
        }
        let mut tables: Vec<Table> = tables
            .into_iter()
            .map(|(shape, keys)| {
                let min = keys.values().map(|v| v[0]).min().unwrap_or(u32::MAX);
                Table {
                    shape,
                    src_mask: shape.src.map_or(0, |(v6, len)| prefix_mask(v6, len)),
                    dst_mask: shape.dst.map_or(0, |(v6, len)| prefix_mask(v6, len)),
                    min,
                    map: keys
                        .into_iter()
                        .map(|(k, v)| (k, v.into_boxed_slice()))
                        .collect(),
                }
            })
            .collect();
        tables.sort_by_key(|t| t.min);
        Index {
            tables,
            residual: residual.into_boxed_slice(),
        }
    }

    /// Lowest index of a rule matching the flow, if below `bound`.
    #[inline]
    pub(crate) fn first_match(
        &self,
        rules: &[Rule],
        f: &FlowFacts,
        wid: Option<u32>,
        bound: u32,
    ) -> Option<u32> {
        let mut best = bound;
        let (src_v6, src) = addr_bits(f.src);
        let (dst_v6, dst) = addr_bits(f.dst);
        for t in &self.tables {
            if t.min >= best {
                break;
            }
            let s = t.shape;
            let key = Key {
                src: match s.src {
                    None => 0,
                    Some((v6, _)) if v6 == src_v6 => src & t.src_mask,
                    Some(_) => continue,
                },
                dst: match s.dst {
                    None => 0,
                    Some((v6, _)) if v6 == dst_v6 => dst & t.dst_mask,
                    Some(_) => continue,
                },
                workload: match (s.scoped, wid) {
                    (false, _) => 0,
                    (true, Some(w)) => w,
                    (true, None) => continue,
                },
                proto: if s.proto { f.proto } else { 0 },
                src_port: if s.src_port { f.src_port } else { 0 },
                dst_port: if s.dst_port { f.dst_port } else { 0 },
            };
            if let Some(cands) = t.map.get(&key) {
                for &i in cands.iter() {
                    if i >= best {
                        break;
                    }
                    if rules[i as usize].matches(f, wid) {
                        best = i;
                        break;
                    }
                }
            }
        }
        for &i in self.residual.iter() {
            if i >= best {
                break;
            }
            if rules[i as usize].matches(f, wid) {
                best = i;
                break;
            }
        }
        (best < bound).then_some(best)
    }
}
