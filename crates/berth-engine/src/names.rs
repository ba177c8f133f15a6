//! Names: docker's rule for the names users give containers, networks
//! and volumes (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`: one rule, so that a name
//! valid for one is valid for all, and none can hold a path separator),
//! and the names docker generates for containers given none.

use crate::store::{ContainerRecord, ContainerStore, StoreError};

/// A valid network or volume name: the rule, and at most 255 bytes (they
/// become file names).
pub fn is_valid(name: &str) -> bool {
    is_valid_container_name(name) && name.len() <= 255
}

/// A valid container name: the rule, at most [`MAX_CONTAINER_NAME`] bytes.
pub fn is_valid_container_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && name.len() <= MAX_CONTAINER_NAME
}

/// The longest container name: room for the kubelet's names
/// (`k8s_CONTAINER_POD_NAMESPACE_UID_ATTEMPT`, up to ~430 bytes within
/// Kubernetes' own limits); container names are keys in containers.redb,
/// never file names.
pub const MAX_CONTAINER_NAME: usize = 1024;

// Generated names: docker's own name space, so names look as users
// expect and collide as rarely (108 x 236 = 25,488 pairs). The words are
// moby's pkg/namesgenerator lists (Apache-2.0), frozen upstream since 2022.

/// docker's adjectives.
const LEFT: [&str; 108] = [
    "admiring",
    "adoring",
    "affectionate",
    "agitated",
    "amazing",
    "angry",
    "awesome",
    "beautiful",
    "blissful",
    "bold",
    "boring",
    "brave",
    "busy",
    "charming",
    "clever",
    "cool",
    "compassionate",
    "competent",
    "condescending",
    "confident",
    "cranky",
    "crazy",
    "dazzling",
    "determined",
    "distracted",
    "dreamy",
    "eager",
    "ecstatic",
    "elastic",
    "elated",
    "elegant",
    "eloquent",
    "epic",
    "exciting",
    "fervent",
    "festive",
    "flamboyant",
    "focused",
    "friendly",
    "frosty",
    "funny",
    "gallant",
    "gifted",
    "goofy",
    "gracious",
    "great",
    "happy",
    "hardcore",
    "heuristic",
    "hopeful",
    "hungry",
    "infallible",
    "inspiring",
    "intelligent",
    "interesting",
    "jolly",
    "jovial",
    "keen",
    "kind",
    "laughing",
    "loving",
    "lucid",
    "magical",
    "mystifying",
    "modest",
    "musing",
    "naughty",
    "nervous",
    "nice",
    "nifty",
    "nostalgic",
    "objective",
    "optimistic",
    "peaceful",
    "pedantic",
    "pensive",
    "practical",
    "priceless",
    "quirky",
    "quizzical",
    "recursing",
    "relaxed",
    "reverent",
    "romantic",
    "sad",
    "serene",
    "sharp",
    "silly",
    "sleepy",
    "stoic",
    "strange",
    "stupefied",
    "suspicious",
    "sweet",
    "tender",
    "thirsty",
    "trusting",
    "unruffled",
    "upbeat",
    "vibrant",
    "vigilant",
    "vigorous",
    "wizardly",
    "wonderful",
    "xenodochial",
    "youthful",
    "zealous",
    "zen",
];

/// docker's notable scientists and hackers.
const RIGHT: [&str; 236] = [
    "agnesi",
    "albattani",
    "allen",
    "almeida",
    "antonelli",
    "archimedes",
    "ardinghelli",
    "aryabhata",
    "austin",
    "babbage",
    "banach",
    "banzai",
    "bardeen",
    "bartik",
    "bassi",
    "beaver",
    "bell",
    "benz",
    "bhabha",
    "bhaskara",
    "black",
    "blackburn",
    "blackwell",
    "bohr",
    "booth",
    "borg",
    "bose",
    "bouman",
    "boyd",
    "brahmagupta",
    "brattain",
    "brown",
    "buck",
    "burnell",
    "cannon",
    "carson",
    "cartwright",
    "carver",
    "cerf",
    "chandrasekhar",
    "chaplygin",
    "chatelet",
    "chatterjee",
    "chaum",
    "chebyshev",
    "clarke",
    "cohen",
    "colden",
    "cori",
    "cray",
    "curran",
    "curie",
    "darwin",
    "davinci",
    "dewdney",
    "dhawan",
    "diffie",
    "dijkstra",
    "dirac",
    "driscoll",
    "dubinsky",
    "easley",
    "edison",
    "einstein",
    "elbakyan",
    "elgamal",
    "elion",
    "ellis",
    "engelbart",
    "euclid",
    "euler",
    "faraday",
    "feistel",
    "fermat",
    "fermi",
    "feynman",
    "franklin",
    "gagarin",
    "galileo",
    "galois",
    "ganguly",
    "gates",
    "gauss",
    "germain",
    "goldberg",
    "goldstine",
    "goldwasser",
    "golick",
    "goodall",
    "gould",
    "greider",
    "grothendieck",
    "haibt",
    "hamilton",
    "haslett",
    "hawking",
    "hellman",
    "heisenberg",
    "hermann",
    "herschel",
    "hertz",
    "heyrovsky",
    "hodgkin",
    "hofstadter",
    "hoover",
    "hopper",
    "hugle",
    "hypatia",
    "ishizaka",
    "jackson",
    "jang",
    "jemison",
    "jennings",
    "jepsen",
    "johnson",
    "joliot",
    "jones",
    "kalam",
    "kapitsa",
    "kare",
    "keldysh",
    "keller",
    "kepler",
    "khayyam",
    "khorana",
    "kilby",
    "kirch",
    "knuth",
    "kowalevski",
    "lalande",
    "lamarr",
    "lamport",
    "leakey",
    "leavitt",
    "lederberg",
    "lehmann",
    "lewin",
    "lichterman",
    "liskov",
    "lovelace",
    "lumiere",
    "mahavira",
    "margulis",
    "matsumoto",
    "maxwell",
    "mayer",
    "mccarthy",
    "mcclintock",
    "mclaren",
    "mclean",
    "mcnulty",
    "mendel",
    "mendeleev",
    "meitner",
    "meninsky",
    "merkle",
    "mestorf",
    "mirzakhani",
    "montalcini",
    "moore",
    "morse",
    "murdock",
    "moser",
    "napier",
    "nash",
    "neumann",
    "newton",
    "nightingale",
    "nobel",
    "noether",
    "northcutt",
    "noyce",
    "panini",
    "pare",
    "pascal",
    "pasteur",
    "payne",
    "perlman",
    "pike",
    "poincare",
    "poitras",
    "proskuriakova",
    "ptolemy",
    "raman",
    "ramanujan",
    "ride",
    "ritchie",
    "rhodes",
    "robinson",
    "roentgen",
    "rosalind",
    "rubin",
    "saha",
    "sammet",
    "sanderson",
    "satoshi",
    "shamir",
    "shannon",
    "shaw",
    "shirley",
    "shockley",
    "shtern",
    "sinoussi",
    "snyder",
    "solomon",
    "spence",
    "stonebraker",
    "sutherland",
    "swanson",
    "swartz",
    "swirles",
    "taussig",
    "tesla",
    "tharp",
    "thompson",
    "torvalds",
    "tu",
    "turing",
    "varahamihira",
    "vaughan",
    "villani",
    "visvesvaraya",
    "volhard",
    "wescoff",
    "wilbur",
    "wiles",
    "williams",
    "williamson",
    "wilson",
    "wing",
    "wozniak",
    "wright",
    "wu",
    "yalow",
    "yonath",
    "zhukovsky",
];

/// Tries with a generated name before the short id is used, as docker's
/// daemon does (the second and later with a random digit appended).
const ATTEMPTS: u32 = 6;

/// A random docker-style name, "adjective_surname"; from the second try
/// on (`retry > 0`) with a random digit appended, as docker does. Never
/// "boring_wozniak": docker's one exception, kept.
pub fn generate(retry: u32) -> String {
    loop {
        let r = random();
        let mut name = format!("{}_{}", LEFT[r as usize % LEFT.len()], RIGHT[(r >> 16) as usize % RIGHT.len()]);
        if name == "boring_wozniak" {
            continue;
        }
        if retry > 0 {
            name.push(char::from(b'0' + ((r >> 32) % 10) as u8));
        }
        return name;
    }
}

/// Random bits from the kernel, the source container ids come from.
fn random() -> u64 {
    let id = crate::store::new_id();
    u64::from_str_radix(&id[..16], 16).unwrap_or(0)
}

/// Records `rec` under a generated name, trying another when one is taken
/// (parallel `run`s pick theirs at the same time): [`ATTEMPTS`] generated
/// names, then the short id, as docker does.
pub fn insert_with_generated_name(store: &ContainerStore, rec: &mut ContainerRecord) -> Result<(), StoreError> {
    insert_named(store, rec, generate)
}

fn insert_named(
    store: &ContainerStore,
    rec: &mut ContainerRecord,
    mut generate: impl FnMut(u32) -> String,
) -> Result<(), StoreError> {
    for retry in 0..ATTEMPTS {
        rec.name = generate(retry);
        match store.insert(rec) {
            Err(StoreError::NameInUse { .. }) => continue,
            other => return other,
        }
    }
    rec.name = rec.id.chars().take(12).collect();
    store.insert(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_come_from_dockers_name_space() {
        assert!(LEFT.len() * RIGHT.len() > 25_000);
        for retry in 0..3 {
            for _ in 0..200 {
                let n = generate(retry);
                assert!(is_valid(&n), "{n}");
                let (adj, rest) = n.split_once('_').unwrap();
                assert!(LEFT.contains(&adj), "{n}");
                let who = if retry == 0 { rest } else { rest.trim_end_matches(|c: char| c.is_ascii_digit()) };
                assert!(RIGHT.contains(&who), "{n}");
                assert_eq!(rest.len() - who.len(), usize::from(retry > 0), "{n}");
                assert_ne!(n, "boring_wozniak");
            }
        }
    }

    #[test]
    fn a_taken_name_is_retried_then_the_short_id_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContainerStore::open(&dir.path().join("c.redb")).unwrap();
        let rec = |id: &str| ContainerRecord::new(id, "", "busybox", "sha256:00", "/b".into());
        store.insert(&ContainerRecord { name: "taken".into(), ..rec(&"0".repeat(64)) }).unwrap();
        let mut tries = Vec::new();
        let mut second = rec(&"1".repeat(64));
        insert_named(&store, &mut second, |r| {
            tries.push(r);
            if r < 2 { "taken".into() } else { format!("free{r}") }
        })
        .unwrap();
        assert_eq!((tries.as_slice(), second.name.as_str()), (&[0, 1, 2][..], "free2"));
        assert_eq!(store.get("free2").unwrap().id, second.id);
        let mut third = rec(&"2".repeat(64));
        insert_named(&store, &mut third, |_| "taken".into()).unwrap();
        assert_eq!(third.name, "222222222222", "docker's last resort: the short id");
    }

    #[test]
    fn dockers_rule() {
        for ok in ["web", "my-net", "a.b_c", "9lives"] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in ["", "-x", ".x", "a/b", "../etc", "sp ace", "x:y"] {
            assert!(!is_valid(bad), "{bad:?}");
            assert!(!is_valid_container_name(bad), "{bad:?}");
        }
        // A kubelet's container name is longer than a file name may be.
        let kubelet = format!("k8s_{}_{}_{}_{}_2", "c".repeat(63), "p".repeat(253), "n".repeat(63), "u".repeat(36));
        assert!(is_valid_container_name(&kubelet) && !is_valid(&kubelet));
        assert!(!is_valid_container_name(&"x".repeat(MAX_CONTAINER_NAME + 1)));
    }
}
