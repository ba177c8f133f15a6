//! The filter program: a rule list as eBPF instructions for
//! BPF_PROG_TYPE_CGROUP_DEVICE, built and checked without the kernel.
//!
//! The program is assembled here by hand rather than with a BPF crate: aya
//! and libbpf-rs are built around programs compiled by clang to BPF object
//! files (a BPF toolchain at build time, or libbpf and libelf linked in), and
//! pull in far more code than the problem needs. The filter is at most
//! eighteen instructions per rule, from ten opcodes, with one jump of a
//! fixed distance, and the kernel's verifier checks whatever we produce
//! before it ever runs.
//!
//! Program layout (r1 = context on entry, r0 = verdict). Each condition
//! leaves 0 in its register when it holds:
//!
//! ```text
//!   one block per rule, LAST rule first (the last matching rule decides):
//!     r2 = ((ctx.access_type & 0xffff) ^ type)   'c' and 'b' rules (1 block, 2 char)
//!     r4 = ctx.major ^ major                     if the rule has a major
//!     r5 = ctx.minor ^ minor                     if the rule has a minor
//!     r3 = ctx.access_type >> 16                 (1 mknod, 2 read, 4 write)
//!       allow: r3 &= ~access                     no bit asked for is missing
//!       deny:  r3 = ((r3 & access) - 1) >> 63    some bit asked for is taken
//!     r2 |= r4; r2 |= r5; r2 |= r3               (those present)
//!     if r2 != 0 goto +2                         no match: next rule
//!     r0 = allow ? 1 : 0; exit
//!   r0 = default; exit                   0 after a leading deny-all, else 1
//! ```
//!
//! So an allow matches only if it grants every requested bit and a deny if
//! it takes away any of them, as `crate::devices::allowed` specifies. A
//! rule without conditions (an allow of everything) ends the program: the
//! verifier rejects unreachable instructions, and nothing after it can run.

use crate::devices::{DeviceKind, DeviceRule};

// Instruction classes, sizes, modes, operations and sources from
// include/uapi/linux/bpf_common.h and bpf.h.
const BPF_LDX: u8 = 0x01;
const BPF_ALU: u8 = 0x04;
const BPF_JMP: u8 = 0x05;
const BPF_ALU64: u8 = 0x07;
const BPF_W: u8 = 0x00;
const BPF_MEM: u8 = 0x60;
const BPF_ADD: u8 = 0x00;
const BPF_OR: u8 = 0x40;
const BPF_AND: u8 = 0x50;
const BPF_RSH: u8 = 0x70;
const BPF_XOR: u8 = 0xa0;
const BPF_MOV: u8 = 0xb0;
const BPF_JNE: u8 = 0x50;
const BPF_EXIT: u8 = 0x90;
const BPF_K: u8 = 0x00;
const BPF_X: u8 = 0x08;

// bpf_cgroup_dev_ctx, as the kernel fills it in.
const BPF_DEVCG_DEV_BLOCK: i32 = 1;
const BPF_DEVCG_DEV_CHAR: i32 = 2;
const BPF_DEVCG_ACC_MKNOD: u32 = 1;
const BPF_DEVCG_ACC_READ: u32 = 2;
const BPF_DEVCG_ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = BPF_DEVCG_ACC_MKNOD | BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE;
const CTX_ACCESS_TYPE: i16 = 0;
const CTX_MAJOR: i16 = 4;
const CTX_MINOR: i16 = 8;

const R0: u8 = 0;
const R_CTX: u8 = 1;
const R_TYPE: u8 = 2;
const R_ACCESS: u8 = 3;
const R_MAJOR: u8 = 4;
const R_MINOR: u8 = 5;

/// One eBPF instruction, laid out as the kernel's `struct bpf_insn`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// `dst_reg:4, src_reg:4`: a C bitfield pair, see [`Insn::new`].
    regs: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        // C allocates bitfields from the least significant bit on
        // little-endian targets and from the most significant on big-endian
        // ones, so dst_reg (declared first) moves with the byte order.
        let regs = if cfg!(target_endian = "little") { dst | (src << 4) } else { (dst << 4) | src };
        Insn { code, regs, off, imm }
    }

    pub const fn dst(&self) -> u8 {
        if cfg!(target_endian = "little") { self.regs & 0xf } else { self.regs >> 4 }
    }

    pub const fn src(&self) -> u8 {
        if cfg!(target_endian = "little") { self.regs >> 4 } else { self.regs & 0xf }
    }
}

/// dst = *(u32 *)(src + off)
const fn load_u32(dst: u8, src: u8, off: i16) -> Insn {
    Insn::new(BPF_LDX | BPF_MEM | BPF_W, dst, src, off, 0)
}

/// dst = (u32)dst <op> (u32)imm: on the low halves, zero-extended, so
/// immediates above i32::MAX work as the u32 they stand for.
const fn alu32_imm(op: u8, dst: u8, imm: u32) -> Insn {
    Insn::new(BPF_ALU | op | BPF_K, dst, 0, 0, imm as i32)
}

/// dst = dst <op> imm (64 bit, imm sign-extended)
const fn alu64_imm(op: u8, dst: u8, imm: i32) -> Insn {
    Insn::new(BPF_ALU64 | op | BPF_K, dst, 0, 0, imm)
}

/// dst = dst <op> src (64 bit)
const fn alu64_reg(op: u8, dst: u8, src: u8) -> Insn {
    Insn::new(BPF_ALU64 | op | BPF_X, dst, src, 0, 0)
}

/// if dst <op> imm goto pc + 1 + off
const fn jump_imm(op: u8, dst: u8, imm: i32, off: i16) -> Insn {
    Insn::new(BPF_JMP | op | BPF_K, dst, 0, off, imm)
}

pub(super) const fn exit() -> Insn {
    Insn::new(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
}

/// The filter enforcing `rules`, ready for BPF_PROG_LOAD. An empty list
/// gives a program that allows everything (`super::apply` attaches none
/// instead).
pub fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut p = Vec::new();
    for rule in rules.iter().rev() {
        if emit_rule(&mut p, rule) == Block::Unconditional {
            return p;
        }
    }
    let deny_by_default = rules.first().is_some_and(|r| !r.allow && r.is_all());
    p.extend(verdict(!deny_by_default));
    p
}

#[derive(Debug, PartialEq, Eq)]
enum Block {
    /// Emitted with a test that goes on to the next rule (or, for a rule no
    /// access can match, not emitted at all).
    Conditional,
    /// Emitted without a test: it decides every access.
    Unconditional,
}

/// Appends the block for one rule: each of its conditions computes a
/// register that is 0 when it holds, they are ORed together, and one jump
/// skips the verdict when the result is not 0.
///
/// One branch per rule, not one per condition, because of how the verifier
/// walks a program: depth first, keeping the other side of every branch on
/// a stack limited to 8192 entries. With a branch per condition the ones
/// still pending pile up rule after rule and loading fails ("The sequence
/// of 8193 jumps is too complex") at about 2500 rules; with one, the stack
/// never holds more than one. Each condition also reloads its field from
/// the context, so nothing the verifier learned in one block is still live
/// in the next, and every block is verified once.
fn emit_rule(p: &mut Vec<Insn>, rule: &DeviceRule) -> Block {
    let (Some(major), Some(minor)) = (device_number(rule.major), device_number(rule.minor)) else {
        return Block::Conditional; // a number no device has: never matches
    };
    let mask = access_mask(&rule.access);
    if !rule.allow && mask == 0 {
        return Block::Conditional; // takes nothing away: never matches
    }
    // The registers holding a condition: 0 if it holds.
    let mut conditions = Vec::new();
    if let Some(kind) = device_type(rule.kind) {
        p.extend([
            load_u32(R_TYPE, R_CTX, CTX_ACCESS_TYPE),
            alu32_imm(BPF_AND, R_TYPE, 0xffff),
            alu32_imm(BPF_XOR, R_TYPE, kind as u32),
        ]);
        conditions.push(R_TYPE);
    }
    for (reg, field, number) in [(R_MAJOR, CTX_MAJOR, major), (R_MINOR, CTX_MINOR, minor)] {
        if let Some(n) = number {
            p.extend([load_u32(reg, R_CTX, field), alu32_imm(BPF_XOR, reg, n)]);
            conditions.push(reg);
        }
    }
    if emit_access(p, rule.allow, mask) {
        conditions.push(R_ACCESS);
    }
    let verdict = verdict(rule.allow);
    let Some((&all, rest)) = conditions.split_first() else {
        p.extend(verdict);
        return Block::Unconditional;
    };
    p.extend(rest.iter().map(|&reg| alu64_reg(BPF_OR, all, reg)));
    p.push(jump_imm(BPF_JNE, all, 0, verdict.len() as i16));
    p.extend(verdict);
    Block::Conditional
}

/// Appends the access condition into R_ACCESS, unless the rule matches
/// every access (an allow of "rwm"); says whether it did.
fn emit_access(p: &mut Vec<Insn>, allow: bool, mask: u32) -> bool {
    let missing = ACC_ALL & !mask;
    if allow && missing == 0 {
        return false;
    }
    p.extend([load_u32(R_ACCESS, R_CTX, CTX_ACCESS_TYPE), alu32_imm(BPF_RSH, R_ACCESS, 16)]);
    if allow {
        // Holds if no bit asked for is one the rule does not grant.
        p.push(alu32_imm(BPF_AND, R_ACCESS, missing));
    } else {
        // Holds if some bit asked for is one the rule takes away:
        // ((access & mask) - 1) >> 63 is 1 exactly when access & mask is 0
        // (it is at most 7, so only 0 - 1 wraps around to the top bit).
        p.extend([
            alu32_imm(BPF_AND, R_ACCESS, mask),
            alu64_imm(BPF_ADD, R_ACCESS, -1),
            alu64_imm(BPF_RSH, R_ACCESS, 63),
        ]);
    }
    true
}

/// r0 = allow as 0/1; exit
fn verdict(allow: bool) -> [Insn; 2] {
    [alu64_imm(BPF_MOV, R0, i32::from(allow)), exit()]
}

/// A rule's major or minor: Some(None) for any, Some(Some(n)) for exactly n,
/// None for a number outside the u32 the kernel passes (negative or too
/// large), which no device can have.
fn device_number(n: Option<i64>) -> Option<Option<u32>> {
    match n {
        None => Some(None),
        Some(n) => u32::try_from(n).ok().map(Some),
    }
}

fn device_type(kind: DeviceKind) -> Option<i32> {
    match kind {
        DeviceKind::All => None,
        DeviceKind::Char => Some(BPF_DEVCG_DEV_CHAR),
        DeviceKind::Block => Some(BPF_DEVCG_DEV_BLOCK),
    }
}

/// "rwm" letters as BPF_DEVCG_ACC_* bits; other letters grant nothing.
fn access_mask(access: &str) -> u32 {
    access
        .chars()
        .map(|c| match c {
            'r' => BPF_DEVCG_ACC_READ,
            'w' => BPF_DEVCG_ACC_WRITE,
            'm' => BPF_DEVCG_ACC_MKNOD,
            _ => 0,
        })
        .fold(0, |a, b| a | b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::allowed;
    use DeviceKind::*;

    fn rule(allow: bool, kind: DeviceKind, major: Option<i64>, minor: Option<i64>, access: &str) -> DeviceRule {
        DeviceRule { allow, kind, major, minor, access: access.to_string() }
    }

    fn deny_all() -> DeviceRule {
        rule(false, All, None, None, "rwm")
    }

    /// What `check_cfg` in the kernel's verifier insists on before it runs
    /// anything: jumps land inside the program and only go forward (no
    /// loops), every instruction is reachable, and the last one cannot fall
    /// off the end.
    fn check_cfg(p: &[Insn]) {
        let mut reachable = vec![false; p.len()];
        reachable[0] = true;
        for (pc, insn) in p.iter().enumerate() {
            if !reachable[pc] {
                panic!("unreachable instruction {pc} in {p:#?}");
            }
            let class = insn.code & 0x07;
            let op = insn.code & 0xf0;
            let is_jump = class == BPF_JMP && op != BPF_EXIT;
            if is_jump {
                assert!(insn.off >= 0, "backward jump at {pc}");
                let target = pc + 1 + insn.off as usize;
                assert!(target < p.len(), "jump out of the program at {pc}");
                reachable[target] = true;
            }
            let falls_through = !(class == BPF_JMP && (op == BPF_EXIT || op == 0x00/* JA */));
            if falls_through {
                assert!(pc + 1 < p.len(), "falls off the end at {pc}");
                reachable[pc + 1] = true;
            }
        }
    }

    /// Runs `p` as the kernel would for an access; panics on anything the
    /// verifier would refuse (unknown opcodes, reading an unset register,
    /// arithmetic on the context pointer, context loads other than the
    /// three u32 fields, shifts past the operand's width).
    fn run(p: &[Insn], kind: u32, access: u32, major: u32, minor: u32) -> bool {
        let ctx = [(access << 16) | kind, major, minor];
        let mut regs: [Option<u64>; 11] = [None; 11];
        let get = |regs: &[Option<u64>; 11], r: u8| {
            assert!(r != R_CTX, "r1 holds the context pointer, not a number");
            regs[r as usize].unwrap_or_else(|| panic!("r{r} read unset"))
        };
        let mut pc = 0;
        loop {
            let insn = p[pc];
            pc += 1;
            let (class, op, dst) = (insn.code & 0x07, insn.code & 0xf0, insn.dst());
            let operand = |regs: &[Option<u64>; 11]| {
                if insn.code & BPF_X != 0 { get(regs, insn.src()) } else { insn.imm as i64 as u64 }
            };
            match class {
                BPF_LDX => {
                    assert_eq!(insn.code, BPF_LDX | BPF_MEM | BPF_W);
                    assert_eq!(insn.src(), R_CTX);
                    assert!(matches!(insn.off, CTX_ACCESS_TYPE | CTX_MAJOR | CTX_MINOR));
                    regs[dst as usize] = Some(u64::from(ctx[insn.off as usize / 4]));
                }
                BPF_ALU64 => {
                    let a = if op == BPF_MOV { 0 } else { get(&regs, dst) };
                    regs[dst as usize] = Some(alu(op, a, operand(&regs), 64));
                }
                BPF_ALU => {
                    let a = if op == BPF_MOV { 0 } else { get(&regs, dst) as u32 };
                    let b = operand(&regs) as u32;
                    regs[dst as usize] = Some(alu(op, u64::from(a), u64::from(b), 32) as u32 as u64);
                }
                BPF_JMP if op == BPF_JNE => {
                    if get(&regs, dst) != operand(&regs) {
                        pc += insn.off as usize;
                    }
                }
                BPF_JMP if insn.code == BPF_JMP | BPF_EXIT => {
                    let r0 = get(&regs, R0);
                    assert!(r0 <= 1, "verdict {r0}");
                    return r0 == 1;
                }
                _ => panic!("unexpected opcode {:#x} at {}", insn.code, pc - 1),
            }
        }
    }

    fn alu(op: u8, a: u64, b: u64, bits: u64) -> u64 {
        match op {
            BPF_ADD => a.wrapping_add(b),
            BPF_OR => a | b,
            BPF_AND => a & b,
            BPF_XOR => a ^ b,
            BPF_RSH => {
                assert!(b < bits, "shift by {b}");
                a >> b
            }
            BPF_MOV => b,
            _ => panic!("unexpected ALU op {op:#x}"),
        }
    }

    fn access_string(bits: u32) -> String {
        let mut s = String::new();
        for (bit, c) in [(BPF_DEVCG_ACC_READ, 'r'), (BPF_DEVCG_ACC_WRITE, 'w'), (BPF_DEVCG_ACC_MKNOD, 'm')] {
            if bits & bit != 0 {
                s.push(c);
            }
        }
        s
    }

    const MAJORS: [u32; 6] = [0, 1, 5, 136, 0x8000_0000, u32::MAX];
    const MINORS: [u32; 5] = [0, 3, 5, 9, 0xffff_fffe];

    /// Checks the program for `rules` against `devices::allowed` for every
    /// combination of type, access bits (including none) and the numbers
    /// above.
    fn assert_agrees(rules: &[DeviceRule]) {
        let p = program(rules);
        check_cfg(&p);
        for (kind, kind_code) in [(Char, BPF_DEVCG_DEV_CHAR), (Block, BPF_DEVCG_DEV_BLOCK)] {
            for access in 0..=ACC_ALL {
                for major in MAJORS {
                    for minor in MINORS {
                        let want = allowed(rules, kind, i64::from(major), i64::from(minor), &access_string(access));
                        let got = run(&p, kind_code as u32, access, major, minor);
                        assert_eq!(
                            got,
                            want,
                            "{kind:?} {major}:{minor} {:?} with {:?}",
                            access_string(access),
                            rules.iter().map(|r| (r.allow, r.to_v1())).collect::<Vec<_>>()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_usual_container_rules() {
        let rules = crate::devices::effective_rules(&[
            deny_all(),
            rule(false, Char, Some(1), Some(9), "r"),
            rule(true, Block, Some(8), None, "rw"),
            rule(false, Block, Some(8), Some(5), "w"),
        ]);
        assert_agrees(&rules);
        let p = program(&rules);
        assert!(!run(&p, BPF_DEVCG_DEV_CHAR as u32, BPF_DEVCG_ACC_READ, 1, 9), "urandom read denied");
        assert!(run(&p, BPF_DEVCG_DEV_CHAR as u32, BPF_DEVCG_ACC_WRITE, 1, 9), "urandom write allowed");
        assert!(run(&p, BPF_DEVCG_DEV_BLOCK as u32, BPF_DEVCG_ACC_READ, 8, 5));
        assert!(!run(&p, BPF_DEVCG_DEV_BLOCK as u32, BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE, 8, 5));
    }

    #[test]
    fn edge_cases() {
        assert_agrees(&[]);
        assert_agrees(&[deny_all()]);
        assert_agrees(&[rule(true, All, None, None, "rwm")]);
        // An allow-everything rule ends the program; earlier rules are dead.
        assert_agrees(&[deny_all(), rule(false, Char, Some(1), Some(3), "r"), rule(true, All, None, None, "rwm")]);
        assert_agrees(&[deny_all(), rule(true, All, None, None, "rwm"), rule(false, Char, None, None, "w")]);
        // Numbers past i32::MAX, and ones no device has.
        assert_agrees(&[deny_all(), rule(true, Char, Some(0x8000_0000), Some(0xffff_fffe), "rw")]);
        assert_agrees(&[deny_all(), rule(true, Char, Some(u32::MAX.into()), None, "rwm")]);
        assert_agrees(&[rule(false, Char, Some(-1), None, "rwm"), rule(false, All, Some(1 << 33), None, "r")]);
        // Access strings the constructors would normalize, built by hand.
        assert_agrees(&[rule(true, Char, Some(1), None, ""), rule(false, Char, Some(1), Some(3), "")]);
        assert_agrees(&[deny_all(), rule(true, Block, None, None, "mx")]);
        // Not a deny-all first (misses 'm'): the default stays allow.
        assert_agrees(&[rule(false, All, None, None, "rw"), rule(true, Char, Some(1), Some(3), "r")]);
    }

    /// A deterministic xorshift, so failures reproduce without a rand crate.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }

        fn pick<T: Clone>(&mut self, from: &[T]) -> T {
            from[self.next(from.len())].clone()
        }
    }

    fn random_rule(rng: &mut Rng) -> DeviceRule {
        let numbers = |extra: &[u32]| {
            let mut v = vec![None, None, Some(-1), Some(1i64 << 32)];
            v.extend(extra.iter().map(|&n| Some(i64::from(n))));
            v
        };
        rule(
            rng.next(2) == 0,
            rng.pick(&[All, Char, Block]),
            rng.pick(&numbers(&MAJORS)),
            rng.pick(&numbers(&MINORS)),
            &access_string(rng.next(8) as u32),
        )
    }

    #[test]
    fn random_rule_lists_agree_with_the_reference() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3000 {
            let mut rules: Vec<DeviceRule> = (0..rng.next(9)).map(|_| random_rule(&mut rng)).collect();
            if rng.next(2) == 0 {
                rules.insert(0, deny_all());
            }
            assert_agrees(&rules);
        }
    }

    /// The encoding itself, against the numbers in the kernel's uapi
    /// headers (the interpreter shares our constants, so it cannot catch a
    /// wrong one).
    #[test]
    fn encoding_matches_the_uapi() {
        let raw = |p: Vec<Insn>| -> Vec<(u8, u8, u8, i16, i32)> {
            p.iter().map(|i| (i.code, i.dst(), i.src(), i.off, i.imm)).collect()
        };
        assert_eq!(
            raw(program(&[rule(true, Char, Some(1), Some(3), "rw")])),
            [
                (0x61, 2, 1, 0, 0),      // r2 = *(u32 *)(r1 + 0)
                (0x54, 2, 0, 0, 0xffff), // w2 &= 0xffff
                (0xa4, 2, 0, 0, 2),      // w2 ^= 2 (char)
                (0x61, 4, 1, 4, 0),      // r4 = *(u32 *)(r1 + 4)
                (0xa4, 4, 0, 0, 1),      // w4 ^= 1
                (0x61, 5, 1, 8, 0),      // r5 = *(u32 *)(r1 + 8)
                (0xa4, 5, 0, 0, 3),      // w5 ^= 3
                (0x61, 3, 1, 0, 0),      // r3 = *(u32 *)(r1 + 0)
                (0x74, 3, 0, 0, 16),     // w3 >>= 16
                (0x54, 3, 0, 0, 1),      // w3 &= mknod (not granted)
                (0x4f, 2, 4, 0, 0),      // r2 |= r4
                (0x4f, 2, 5, 0, 0),      // r2 |= r5
                (0x4f, 2, 3, 0, 0),      // r2 |= r3
                (0x55, 2, 0, 2, 0),      // if r2 != 0 goto +2
                (0xb7, 0, 0, 0, 1),      // r0 = 1
                (0x95, 0, 0, 0, 0),      // exit
                (0xb7, 0, 0, 0, 1),      // r0 = 1 (no deny-all first)
                (0x95, 0, 0, 0, 0),      // exit
            ]
        );
        assert_eq!(
            raw(program(&[rule(false, Block, None, Some(0x8000_0000), "w")])),
            [
                (0x61, 2, 1, 0, 0),        // r2 = *(u32 *)(r1 + 0)
                (0x54, 2, 0, 0, 0xffff),   // w2 &= 0xffff
                (0xa4, 2, 0, 0, 1),        // w2 ^= 1 (block)
                (0x61, 5, 1, 8, 0),        // r5 = *(u32 *)(r1 + 8)
                (0xa4, 5, 0, 0, i32::MIN), // w5 ^= 0x80000000
                (0x61, 3, 1, 0, 0),        // r3 = *(u32 *)(r1 + 0)
                (0x74, 3, 0, 0, 16),       // w3 >>= 16
                (0x54, 3, 0, 0, 4),        // w3 &= write
                (0x07, 3, 0, 0, -1),       // r3 += -1
                (0x77, 3, 0, 0, 63),       // r3 >>= 63
                (0x4f, 2, 5, 0, 0),        // r2 |= r5
                (0x4f, 2, 3, 0, 0),        // r2 |= r3
                (0x55, 2, 0, 2, 0),        // if r2 != 0 goto +2
                (0xb7, 0, 0, 0, 0),        // r0 = 0
                (0x95, 0, 0, 0, 0),        // exit
                (0xb7, 0, 0, 0, 1),        // r0 = 1
                (0x95, 0, 0, 0, 0),        // exit
            ]
        );
        assert_eq!(std::mem::size_of::<Insn>(), 8);
    }
}
