"""Seeded generator of the demo corpus: English to a German-like language.

The German side is real German vocabulary with real grammar, so that a model has to learn
what real translation needs, in a corpus small enough to train on two CPU cores:

- agreement: articles and adjective endings follow gender, number and case
  ("the old man" -> "der alte Mann", "sees the old man" -> "sieht den alten Mann",
  "with an old man" -> "mit einem alten Mann"); verbs follow person and number;
- word order: the finite verb comes last in subordinate clauses ("..., dass der Mann den Hund
  sieht"), participles and infinitives go to the end of the clause ("hat den Hund gesehen"),
  a fronted adverb or subordinate clause moves the verb before the subject ("Heute sieht der
  Mann den Hund"), questions start with the verb, time adverbs move to the front of the
  middle field, and negation becomes "nicht" after the objects or "kein" on an indefinite
  object.

Every random choice shows in the English sentence, so each English sentence has exactly one
German translation and a perfect model can reach BLEU 100. Sentences run from 3 to about 40
words; long ones hold many content words, which a model without attention cannot carry in
one vector.

    python data/demo/generate.py            # rewrite data/demo/{train,dev,test}.{en,de}.gz

The output is byte-for-byte reproducible: same seed, same files (tests check this).
"""

from __future__ import annotations

import argparse
import gzip
import random
from dataclasses import dataclass
from pathlib import Path

SEED = 20261126
SPLITS = {"test": 1_000, "dev": 500, "train": 30_000}  # held-out splits are drawn first

# --- Lexicon ------------------------------------------------------------------------------
# fmt: off
# Nouns: English singular, English plural, German singular, German plural, gender, classes.
# Classes say where a noun can appear: a (animate), p (person), t (thing you can hold),
# r (readable), f (food), o (openable), w (writable), x (throwable), b (buildable),
# l (place you can be in), s (surface), u (something you can be under or behind).
NOUNS = [
    ("man", "men", "Mann", "Männer", "m", "ap"),
    ("woman", "women", "Frau", "Frauen", "f", "ap"),
    ("child", "children", "Kind", "Kinder", "n", "ap"),
    ("girl", "girls", "Mädchen", "Mädchen", "n", "ap"),
    ("teacher", "teachers", "Lehrer", "Lehrer", "m", "ap"),
    ("doctor", "doctors", "Arzt", "Ärzte", "m", "ap"),
    ("cook", "cooks", "Koch", "Köche", "m", "ap"),
    ("king", "kings", "König", "Könige", "m", "ap"),
    ("queen", "queens", "Königin", "Königinnen", "f", "ap"),
    ("friend", "friends", "Freund", "Freunde", "m", "ap"),
    ("sister", "sisters", "Schwester", "Schwestern", "f", "ap"),
    ("brother", "brothers", "Bruder", "Brüder", "m", "ap"),
    ("mother", "mothers", "Mutter", "Mütter", "f", "ap"),
    ("father", "fathers", "Vater", "Väter", "m", "ap"),
    ("neighbour", "neighbours", "Nachbarin", "Nachbarinnen", "f", "ap"),
    ("baby", "babies", "Baby", "Babys", "n", "ap"),
    ("dog", "dogs", "Hund", "Hunde", "m", "a"),
    ("cat", "cats", "Katze", "Katzen", "f", "a"),
    ("horse", "horses", "Pferd", "Pferde", "n", "a"),
    ("bird", "birds", "Vogel", "Vögel", "m", "a"),
    ("mouse", "mice", "Maus", "Mäuse", "f", "a"),
    ("cow", "cows", "Kuh", "Kühe", "f", "a"),
    ("book", "books", "Buch", "Bücher", "n", "trow"),
    ("letter", "letters", "Brief", "Briefe", "m", "trow"),
    ("newspaper", "newspapers", "Zeitung", "Zeitungen", "f", "tr"),
    ("car", "cars", "Auto", "Autos", "n", "tol"),
    ("apple", "apples", "Apfel", "Äpfel", "m", "tfx"),
    ("ball", "balls", "Ball", "Bälle", "m", "tx"),
    ("table", "tables", "Tisch", "Tische", "m", "tbsu"),
    ("chair", "chairs", "Stuhl", "Stühle", "m", "tbsu"),
    ("house", "houses", "Haus", "Häuser", "n", "blu"),
    ("garden", "gardens", "Garten", "Gärten", "m", "l"),
    ("city", "cities", "Stadt", "Städte", "f", "l"),
    ("street", "streets", "Straße", "Straßen", "f", "ls"),
    ("bottle", "bottles", "Flasche", "Flaschen", "f", "tox"),
    ("cup", "cups", "Tasse", "Tassen", "f", "t"),
    ("door", "doors", "Tür", "Türen", "f", "ou"),
    ("window", "windows", "Fenster", "Fenster", "n", "o"),
    ("picture", "pictures", "Bild", "Bilder", "n", "tw"),
    ("song", "songs", "Lied", "Lieder", "n", "w"),
    ("key", "keys", "Schlüssel", "Schlüssel", "m", "tx"),
    ("bag", "bags", "Tasche", "Taschen", "f", "tol"),
    ("boat", "boats", "Boot", "Boote", "n", "tblsu"),
    ("bicycle", "bicycles", "Fahrrad", "Fahrräder", "n", "tb"),
    ("flower", "flowers", "Blume", "Blumen", "f", "tx"),
    ("tree", "trees", "Baum", "Bäume", "m", "u"),
    ("bed", "beds", "Bett", "Betten", "n", "blsu"),
    ("shoe", "shoes", "Schuh", "Schuhe", "m", "tx"),
    ("hat", "hats", "Hut", "Hüte", "m", "tx"),
    ("cake", "cakes", "Kuchen", "Kuchen", "m", "tfb"),
    ("bread", "breads", "Brot", "Brote", "n", "tf"),
    ("soup", "soups", "Suppe", "Suppen", "f", "f"),
    ("river", "rivers", "Fluss", "Flüsse", "m", "l"),
    ("lake", "lakes", "See", "Seen", "m", "l"),
    ("school", "schools", "Schule", "Schulen", "f", "lu"),
    ("church", "churches", "Kirche", "Kirchen", "f", "lu"),
    ("kitchen", "kitchens", "Küche", "Küchen", "f", "l"),
    ("park", "parks", "Park", "Parks", "m", "l"),
    ("forest", "forests", "Wald", "Wälder", "m", "l"),
    ("box", "boxes", "Kiste", "Kisten", "f", "tobsu"),
]

# Adjectives: English, German stem (endings are added), German predicative/base form.
ADJECTIVES = [
    ("big", "groß"), ("small", "klein"), ("old", "alt"), ("young", "jung"), ("new", "neu"),
    ("red", "rot"), ("blue", "blau"), ("green", "grün"), ("black", "schwarz"),
    ("white", "weiß"), ("yellow", "gelb"), ("beautiful", "schön"), ("happy", "glücklich"),
    ("tired", "müd"), ("good", "gut"), ("bad", "schlecht"), ("fast", "schnell"),
    ("slow", "langsam"), ("quiet", "leis"), ("loud", "laut"), ("friendly", "freundlich"),
    ("clever", "klug"), ("rich", "reich"), ("poor", "arm"), ("hungry", "hungrig"),
    ("strange", "seltsam"), ("famous", "berühmt"), ("heavy", "schwer"), ("cheap", "billig"),
    ("expensive", "teur"), ("dark", "dunkl"), ("warm", "warm"), ("cold", "kalt"),
    ("long", "lang"), ("short", "kurz"),
]

# Verbs. English: base, third person singular, past participle.
# German: infinitive, ich, du, er/sie, wir/sie, participle, perfect auxiliary.
# Frame: "acc" transitive, "dat" takes a dative object, "ditr" dative person + accusative
# thing, "intr" intransitive. Last field: noun classes allowed as the (direct) object.
VERBS = [
    ("see", "sees", "seen", "sehen", "sehe", "siehst", "sieht", "sehen", "gesehen", "h", "acc", "atl"),
    ("buy", "buys", "bought", "kaufen", "kaufe", "kaufst", "kauft", "kaufen", "gekauft", "h", "acc", "t"),
    ("read", "reads", "read", "lesen", "lese", "liest", "liest", "lesen", "gelesen", "h", "acc", "r"),
    ("find", "finds", "found", "finden", "finde", "findest", "findet", "finden", "gefunden", "h", "acc", "at"),
    ("love", "loves", "loved", "lieben", "liebe", "liebst", "liebt", "lieben", "geliebt", "h", "acc", "al"),
    ("need", "needs", "needed", "brauchen", "brauche", "brauchst", "braucht", "brauchen", "gebraucht", "h", "acc", "t"),
    ("carry", "carries", "carried", "tragen", "trage", "trägst", "trägt", "tragen", "getragen", "h", "acc", "t"),
    ("draw", "draws", "drawn", "zeichnen", "zeichne", "zeichnest", "zeichnet", "zeichnen", "gezeichnet", "h", "acc", "atl"),
    ("wash", "washes", "washed", "waschen", "wasche", "wäschst", "wäscht", "waschen", "gewaschen", "h", "acc", "at"),
    ("open", "opens", "opened", "öffnen", "öffne", "öffnest", "öffnet", "öffnen", "geöffnet", "h", "acc", "o"),
    ("sell", "sells", "sold", "verkaufen", "verkaufe", "verkaufst", "verkauft", "verkaufen", "verkauft", "h", "acc", "t"),
    ("hold", "holds", "held", "halten", "halte", "hältst", "hält", "halten", "gehalten", "h", "acc", "t"),
    ("visit", "visits", "visited", "besuchen", "besuche", "besuchst", "besucht", "besuchen", "besucht", "h", "acc", "pl"),
    ("paint", "paints", "painted", "malen", "male", "malst", "malt", "malen", "gemalt", "h", "acc", "atl"),
    ("build", "builds", "built", "bauen", "baue", "baust", "baut", "bauen", "gebaut", "h", "acc", "b"),
    ("hear", "hears", "heard", "hören", "höre", "hörst", "hört", "hören", "gehört", "h", "acc", "aw"),
    ("eat", "eats", "eaten", "essen", "esse", "isst", "isst", "essen", "gegessen", "h", "acc", "f"),
    ("call", "calls", "called", "rufen", "rufe", "rufst", "ruft", "rufen", "gerufen", "h", "acc", "a"),
    ("forget", "forgets", "forgotten", "vergessen", "vergesse", "vergisst", "vergisst", "vergessen", "vergessen", "h", "acc", "t"),
    ("clean", "cleans", "cleaned", "putzen", "putze", "putzt", "putzt", "putzen", "geputzt", "h", "acc", "tl"),
    ("cook", "cooks", "cooked", "kochen", "koche", "kochst", "kocht", "kochen", "gekocht", "h", "acc", "f"),
    ("write", "writes", "written", "schreiben", "schreibe", "schreibst", "schreibt", "schreiben", "geschrieben", "h", "acc", "w"),
    ("take", "takes", "taken", "nehmen", "nehme", "nimmst", "nimmt", "nehmen", "genommen", "h", "acc", "t"),
    ("throw", "throws", "thrown", "werfen", "werfe", "wirfst", "wirft", "werfen", "geworfen", "h", "acc", "x"),
    ("help", "helps", "helped", "helfen", "helfe", "hilfst", "hilft", "helfen", "geholfen", "h", "dat", "a"),
    ("thank", "thanks", "thanked", "danken", "danke", "dankst", "dankt", "danken", "gedankt", "h", "dat", "p"),
    ("follow", "follows", "followed", "folgen", "folge", "folgst", "folgt", "folgen", "gefolgt", "s", "dat", "a"),
    ("give", "gives", "given", "geben", "gebe", "gibst", "gibt", "geben", "gegeben", "h", "ditr", "t"),
    ("show", "shows", "shown", "zeigen", "zeige", "zeigst", "zeigt", "zeigen", "gezeigt", "h", "ditr", "t"),
    ("bring", "brings", "brought", "bringen", "bringe", "bringst", "bringt", "bringen", "gebracht", "h", "ditr", "t"),
    ("send", "sends", "sent", "schicken", "schicke", "schickst", "schickt", "schicken", "geschickt", "h", "ditr", "t"),
    ("sleep", "sleeps", "slept", "schlafen", "schlafe", "schläfst", "schläft", "schlafen", "geschlafen", "h", "intr", ""),
    ("laugh", "laughs", "laughed", "lachen", "lache", "lachst", "lacht", "lachen", "gelacht", "h", "intr", ""),
    ("sing", "sings", "sung", "singen", "singe", "singst", "singt", "singen", "gesungen", "h", "intr", ""),
    ("wait", "waits", "waited", "warten", "warte", "wartest", "wartet", "warten", "gewartet", "h", "intr", ""),
    ("swim", "swims", "swum", "schwimmen", "schwimme", "schwimmst", "schwimmt", "schwimmen", "geschwommen", "s", "intr", ""),
    ("dance", "dances", "danced", "tanzen", "tanze", "tanzt", "tanzt", "tanzen", "getanzt", "h", "intr", ""),
    ("play", "plays", "played", "spielen", "spiele", "spielst", "spielt", "spielen", "gespielt", "h", "intr", ""),
    ("work", "works", "worked", "arbeiten", "arbeite", "arbeitest", "arbeitet", "arbeiten", "gearbeitet", "h", "intr", ""),
    ("run", "runs", "run", "laufen", "laufe", "läufst", "läuft", "laufen", "gelaufen", "s", "intr", ""),
    ("cry", "cries", "cried", "weinen", "weine", "weinst", "weint", "weinen", "geweint", "h", "intr", ""),
    ("sit", "sits", "sat", "sitzen", "sitze", "sitzt", "sitzt", "sitzen", "gesessen", "h", "intr", ""),
]

# Verbs that take a "that" clause: English base, 3sg; German ich, du, er, wir/sie.
CLAUSE_VERBS = [
    ("know", "knows", "weiß", "weißt", "weiß", "wissen"),
    ("think", "thinks", "glaube", "glaubst", "glaubt", "glauben"),
    ("say", "says", "sage", "sagst", "sagt", "sagen"),
    ("hope", "hopes", "hoffe", "hoffst", "hofft", "hoffen"),
    ("hear", "hears", "höre", "hörst", "hört", "hören"),
]

# Finite forms of auxiliaries and modals: ich, du, er, wir/sie.
HABEN = ("habe", "hast", "hat", "haben")
SEIN = ("bin", "bist", "ist", "sind")
WERDEN = ("werde", "wirst", "wird", "werden")
# English modal (3sg, other persons), German forms.
MODALS = [
    (("can", "can"), ("kann", "kannst", "kann", "können")),
    (("must", "must"), ("muss", "musst", "muss", "müssen")),
    (("wants to", "want to"), ("will", "willst", "will", "wollen")),
]

# Subject pronouns: English, German, person index (0 ich, 1 du, 2 er/sie, 3 wir/sie),
# English third singular?, possessive English, possessive German stem.
PRONOUNS = [
    ("I", "ich", 0, False), ("you", "du", 1, False), ("he", "er", 2, True),
    ("she", "sie", 2, True), ("we", "wir", 3, False), ("they", "sie", 3, False),
]
# Object pronouns: English, German accusative, German dative.
OBJECT_PRONOUNS = [
    ("me", "mich", "mir"), ("you", "dich", "dir"), ("him", "ihn", "ihm"),
    ("her", "sie", "ihr"), ("us", "uns", "uns"), ("them", "sie", "ihnen"),
]
POSSESSIVES = [("my", "mein"), ("your", "dein"), ("his", "sein"), ("her", "ihr"),
               ("our", "unser"), ("their", "ihr")]
NUMBERS = [("two", "zwei"), ("three", "drei"), ("four", "vier"), ("five", "fünf")]

# Prepositions: English, German, case, noun classes allowed.
PREPOSITIONS = [
    ("in", "in", "dat", "l"), ("with", "mit", "dat", "at"), ("on", "auf", "dat", "s"),
    ("under", "unter", "dat", "u"), ("behind", "hinter", "dat", "u"),
    ("next to", "neben", "dat", "atu"), ("from", "aus", "dat", "l"),
    ("for", "für", "acc", "a"), ("without", "ohne", "acc", "at"),
    ("through", "durch", "acc", "l"), ("at", "bei", "dat", "p"),
]
CONTRACTIONS = {("in", "dem"): "im", ("bei", "dem"): "beim"}

# Time adverbs: English, German, tenses it may go with (None: any).
ADVERBS = [
    ("today", "heute", None), ("now", "jetzt", None), ("often", "oft", None),
    ("sometimes", "manchmal", None), ("tomorrow", "morgen", "future"),
    ("in the morning", "am Morgen", None), ("in the evening", "am Abend", None),
    ("on Sunday", "am Sonntag", None), ("every day", "jeden Tag", None),
]
# Subordinating conjunctions joining two clauses.
CONJUNCTIONS = [("because", "weil"), ("although", "obwohl"), ("when", "wenn"),
                ("while", "während")]

# Article and adjective endings by gender/number (m, f, n, pl) and case.
DEFINITE = {"nom": ("der", "die", "das", "die"), "acc": ("den", "die", "das", "die"),
            "dat": ("dem", "der", "dem", "den")}
DIESER = {"nom": ("dieser", "diese", "dieses", "diese"),
          "acc": ("diesen", "diese", "dieses", "diese"),
          "dat": ("diesem", "dieser", "diesem", "diesen")}
EIN_ENDINGS = {"nom": ("", "e", "", "e"), "acc": ("en", "e", "", "e"),
               "dat": ("em", "er", "em", "en")}
WEAK = {"nom": ("e", "e", "e", "en"), "acc": ("en", "e", "e", "en"),
        "dat": ("en", "en", "en", "en")}
MIXED = {"nom": ("er", "e", "es", "en"), "acc": ("en", "e", "es", "en"),
         "dat": ("en", "en", "en", "en")}
STRONG_PLURAL = {"nom": "e", "acc": "e", "dat": "en"}
GENDER_INDEX = {"m": 0, "f": 1, "n": 2}
# fmt: on


@dataclass
class Phrase:
    """A noun phrase in both languages, with what the German verb and negation need."""

    en: list[str]
    de: list[str]
    person: int  # 0 ich, 1 du, 2 er/sie/es, 3 wir/sie
    third_singular: bool  # English "sees" rather than "see"
    indefinite: bool = False  # "a dog", "dogs": negated as "kein"
    de_negated: list[str] | None = None  # the German phrase with "kein"


class Generator:
    """Draws one sentence pair at a time from a seeded random source."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def pick(self, items):
        return self.rng.choice(items)

    # --- noun phrases ---------------------------------------------------------------------

    def noun_phrase(self, classes: str, case: str, depth: int = 0) -> Phrase:
        """A noun phrase whose noun has one of the classes, in the given German case."""
        candidates = [n for n in NOUNS if any(c in n[5] for c in classes)]
        en_sg, en_pl, de_sg, de_pl, gender, noun_classes = self.pick(candidates)
        plural = self.chance(0.3)
        slot = 3 if plural else GENDER_INDEX[gender]
        kind = self.pick(["def", "def", "def", "indef", "indef", "poss", "this"])
        adjectives = []
        if self.chance(0.4):
            adjectives.append(self.pick(ADJECTIVES))
            if self.chance(0.2):
                second = self.pick(ADJECTIVES)
                if second != adjectives[0]:
                    adjectives.append(second)

        if plural:
            noun_de = de_pl + "n" if case == "dat" and de_pl[-1] not in "ns" else de_pl
        else:
            noun_de = de_sg
        noun_en = en_pl if plural else en_sg

        en_det: list[str]
        negated_det: list[str] | None = None
        if kind == "def":
            en_det, de_det, endings = ["the"], [DEFINITE[case][slot]], WEAK
        elif kind == "this":
            en_det = ["these" if plural else "this"]
            de_det, endings = [DIESER[case][slot]], WEAK
        elif kind == "poss":
            en_poss, de_stem = self.pick(POSSESSIVES)
            en_det, de_det, endings = [en_poss], [de_stem + EIN_ENDINGS[case][slot]], MIXED
        elif plural:  # indefinite plural: no article, or a number; strong endings
            if self.chance(0.4):
                en_num, de_num = self.pick(NUMBERS)
                en_det, de_det = [en_num], [de_num]
            else:
                en_det, de_det = [], []
                negated_det = ["kein" + EIN_ENDINGS[case][slot]]
            endings = None
        else:
            first = adjectives[0][0] if adjectives else noun_en
            en_det = ["an" if first[0] in "aeiou" else "a"]
            de_det = ["ein" + EIN_ENDINGS[case][slot]]
            negated_det = ["kein" + EIN_ENDINGS[case][slot]]
            endings = MIXED

        if endings is None:
            adj_de = [stem + STRONG_PLURAL[case] for _, stem in adjectives]
        else:
            adj_de = [stem + endings[case][slot] for _, stem in adjectives]
        en = en_det + [a for a, _ in adjectives] + [noun_en]
        de = de_det + adj_de + [noun_de]
        de_negated = negated_det + adj_de + [noun_de] if negated_det is not None else None

        # A relative clause now and then: "the dog that the man sees" -> "der Hund, den ...".
        if depth == 0 and self.chance(0.1):
            rel_en, rel_de = self.relative_clause(slot, plural, "a" in noun_classes)
            en += rel_en
            de += rel_de
            if de_negated is not None:
                de_negated += rel_de
        return Phrase(
            en,
            de,
            2 if not plural else 3,
            not plural,
            indefinite=negated_det is not None,
            de_negated=de_negated,
        )

    def relative_clause(self, slot: int, plural: bool, animate: bool):
        """A restrictive relative clause on a head noun, verb last in German."""
        verb = self.pick([v for v in VERBS if v[10] == "acc"])
        as_subject = animate and self.chance(0.5)
        if as_subject:
            # "the man who sees the dog" -> "der Mann, der den Hund sieht,"
            obj = self.noun_phrase(verb[11], "acc", depth=1)
            en = ["who", verb[1] if not plural else verb[0]] + obj.en
            de = [",", DEFINITE["nom"][slot]] + obj.de + [verb[6] if not plural else verb[7]]
        else:
            if not any(c in verb[11] for c in ("a" if animate else "tlrfwxob")):
                verb = VERBS[0]  # "see" takes anything
            # "the dog that the man sees" -> "der Hund, den der Mann sieht,"
            subj = self.noun_phrase("a", "nom", depth=1)
            en = ["that"] + subj.en + [verb[1] if subj.third_singular else verb[0]]
            de = [",", DEFINITE["acc"][slot]] + subj.de + [verb[6] if subj.person == 2 else verb[7]]
        return en, de + [","]

    def subject(self) -> Phrase:
        if self.chance(0.25):
            en, de, person, third = self.pick(PRONOUNS)
            return Phrase([en], [de], person, third)
        return self.noun_phrase("a", "nom")

    def object_pronoun(self, case: str) -> Phrase:
        en, acc, dat = self.pick(OBJECT_PRONOUNS)
        return Phrase([en], [acc if case == "acc" else dat], 2, True)

    def object_phrase(self, classes: str, case: str) -> Phrase:
        if "a" in classes and self.chance(0.15):
            return self.object_pronoun(case)
        return self.noun_phrase(classes, case)

    def prepositional_phrase(self):
        en_prep, de_prep, case, classes = self.pick(PREPOSITIONS)
        np = self.noun_phrase(classes, case)
        de = list(np.de)
        if (de_prep, de[0]) in CONTRACTIONS:
            de = [CONTRACTIONS[(de_prep, de[0])]] + de[1:]
        else:
            de = [de_prep] + de
        return en_prep.split() + np.en, de

    # --- clauses --------------------------------------------------------------------------

    def clause(self, order: str, tense: str | None = None, allow_adverb: bool = True):
        """One clause in both languages.

        order: "main" (subject, verb), "inverted" (adverb, verb, subject), "question"
        (verb first), "after_clause" (a statement that follows a fronted subordinate clause:
        verb first in German only) or "sub" (subordinate: verb last in German).
        """
        verb = self.pick(VERBS)
        (en_base, en_3sg, en_pp, de_inf, *de_forms, de_pp, aux, frame, classes) = verb
        subject = self.subject()
        person = subject.person
        if tense is None:
            tense = self.pick(["present"] * 5 + ["perfect"] * 2 + ["future", "modal", "modal"])
        negated = order != "question" and self.chance(0.12)

        # Objects and their German middle-field order: dative before accusative.
        objects_en: list[str] = []
        middle_de: list[str] = []
        last_object: Phrase | None = None
        if frame == "ditr":
            dative = self.object_phrase("p", "dat")
            accusative = self.noun_phrase(classes, "acc")
            objects_en = dative.en + accusative.en
            middle_de = dative.de + accusative.de
            last_object, last_start = accusative, len(dative.de)
        elif frame in ("acc", "dat"):
            obj = self.object_phrase(classes, frame)
            objects_en, middle_de = obj.en, list(obj.de)
            last_object, last_start = obj, 0
        if negated:
            if last_object is not None and last_object.indefinite:
                middle_de = middle_de[:last_start] + last_object.de_negated
            else:
                middle_de = middle_de + ["nicht"]

        pp_en: list[str] = []
        pp_de: list[str] = []
        if self.chance(0.45 if frame == "intr" else 0.25):
            pp_en, pp_de = self.prepositional_phrase()

        adverb = None
        if allow_adverb and (order == "inverted" or self.chance(0.15)):
            fitting = [a for a in ADVERBS if a[2] in (None, tense)]
            adverb = self.pick(fitting)

        # Verb forms. English auxiliaries are a word list whose first word moves before the
        # subject in a question ("does the dog play", "can the dog play").
        third = subject.third_singular
        if tense == "present":
            de_finite, de_final = de_forms[person], []
            if negated or order == "question":
                en_aux, en_verb = ["does" if third else "do"], [en_base]
            else:
                en_aux, en_verb = [], [en_3sg if third else en_base]
        elif tense == "perfect":
            de_finite = (HABEN if aux == "h" else SEIN)[person]
            de_final = [de_pp]
            en_aux, en_verb = ["has" if third else "have"], [en_pp]
        elif tense == "future":
            de_finite, de_final = WERDEN[person], [de_inf]
            en_aux, en_verb = ["will"], [en_base]
        else:
            (en_3, en_other), de_modal = self.pick(MODALS)
            de_finite, de_final = de_modal[person], [de_inf]
            en_verb = [en_base]
            if en_3 == "wants to" and (negated or order == "question"):
                en_aux = ["does" if third else "do", "want", "to"]
            else:
                en_aux = (en_3 if third else en_other).split()
        if negated:
            en_aux = ["cannot"] if en_aux == ["can"] else en_aux[:1] + ["not"] + en_aux[1:]

        # English: subject, auxiliary, verb, objects, PP, adverb (questions: aux first).
        en_tail = en_verb + objects_en + pp_en
        if order == "question":
            en = en_aux[:1] + subject.en + en_aux[1:] + en_tail
        else:
            en = subject.en + en_aux + en_tail
        adverb_de = adverb[1].split() if adverb and order != "inverted" else []
        if adverb and order == "inverted":
            en = adverb[0].split() + en
        elif adverb:
            en = en + adverb[0].split()

        # German: the middle field holds the time adverb, objects, negation, then the PP.
        middle = adverb_de + middle_de + pp_de
        if order == "main":
            de = subject.de + [de_finite] + middle + de_final
        elif order == "inverted":
            de = adverb[1].split() + [de_finite] + subject.de + middle + de_final
        elif order in ("question", "after_clause"):
            de = [de_finite] + subject.de + middle + de_final
        else:  # subordinate: verb last
            de = subject.de + middle + de_final + [de_finite]
        return en, de

    def sentence(self):
        """One sentence pair as lists of words (punctuation as separate words)."""
        kind = self.rng.random()
        if kind < 0.33:
            en, de = self.clause("main")
            end = "."
        elif kind < 0.43:
            en, de = self.clause("inverted")
            end = "."
        elif kind < 0.53:
            en, de = self.clause("question", allow_adverb=False)
            end = "?"
        elif kind < 0.66:  # "I know that ..." -> "ich weiß, dass ..."
            subject = self.subject()
            en_base, en_3sg, *de_forms = self.pick(CLAUSE_VERBS)
            sub_en, sub_de = self.clause("sub")
            en = subject.en + [en_3sg if subject.third_singular else en_base, "that"] + sub_en
            de = subject.de + [de_forms[subject.person], ",", "dass"] + sub_de
            end = "."
        elif kind < 0.80:  # main clause, then "because ..." -> "..., weil ..."
            main_en, main_de = self.clause("main")
            en_conj, de_conj = self.pick(CONJUNCTIONS)
            sub_en, sub_de = self.clause("sub")
            en = main_en + [en_conj] + sub_en
            de = main_de + [",", de_conj] + sub_de
            end = "."
        elif kind < 0.88:  # subordinate clause first: the main clause verb comes next
            en_conj, de_conj = self.pick(CONJUNCTIONS)
            sub_en, sub_de = self.clause("sub")
            main_en, main_de = self.clause("after_clause", allow_adverb=False)
            en = [en_conj] + sub_en + [","] + main_en
            de = [de_conj] + sub_de + [","] + main_de
            end = "."
        else:  # two main clauses: "... and ..."
            first_en, first_de = self.clause("main")
            second_en, second_de = self.clause("main")
            en = first_en + ["and"] + second_en
            de = first_de + ["und"] + second_de
            end = "."
        return en + [end], de + [end]


def detokenize(words: list[str]) -> str:
    """Join words, attach punctuation, drop doubled commas, capitalise the first word."""
    out: list[str] = []
    for word in words:
        if word in (",", ".", "?"):
            if out and out[-1] == ",":
                out.pop()  # a clause-final comma before more punctuation
            if out and word == ",":
                out.append(",")
            elif out:
                out.append(word)
        else:
            out.append(word)
    text = " ".join(out)
    for mark in (",", ".", "?"):
        text = text.replace(" " + mark, mark)
    return text[0].upper() + text[1:]


def generate(seed: int = SEED, sizes: dict[str, int] = SPLITS) -> dict[str, list[tuple[str, str]]]:
    """Sentence pairs for each split; no English sentence appears in two splits."""
    generator = Generator(seed)
    seen: set[str] = set()
    splits: dict[str, list[tuple[str, str]]] = {}
    for split, size in sizes.items():
        pairs: list[tuple[str, str]] = []
        while len(pairs) < size:
            en_words, de_words = generator.sentence()
            if len(en_words) > 40:
                continue
            en = detokenize(en_words)
            if en in seen:
                continue
            seen.add(en)
            pairs.append((en, detokenize(de_words)))
        splits[split] = pairs
    return splits


def write_gzip(path: Path, lines: list[str]) -> None:
    """Gzip with a fixed timestamp and no stored name, so the bytes are reproducible."""
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    with open(path, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:
        f.write(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    for split, pairs in generate(args.seed).items():
        write_gzip(args.out / f"{split}.en.gz", [en for en, _ in pairs])
        write_gzip(args.out / f"{split}.de.gz", [de for _, de in pairs])
        print(f"{split}: {len(pairs)} pairs")


if __name__ == "__main__":
    main()
