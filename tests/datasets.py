"""The synthetic datasets the tests train on, written in the formats users give the recipes: sentiment
TSV (held-out adjectives), digits -> English number words, and SQuAD JSON about invented people and
cities (SQuAD 2.0 adds unanswerable questions)."""

from __future__ import annotations

import csv
import json
import random

# -- sentiment (bert_classify, distill)

SUBJECTS = ["the movie", "this film", "the acting", "the plot", "the soundtrack", "the ending", "the story",
            "the cast", "this show", "the director's work"]
VERBS = ["was", "is", "felt", "seemed", "turned out to be"]
# Held-out adjectives differ from the training ones: the eval set measures transfer, not memory.
TRAIN_WORDS = (["terrible", "awful", "boring", "dreadful", "horrible", "dull", "disappointing", "poor"],
               ["great", "wonderful", "excellent", "delightful", "brilliant", "superb", "fantastic", "lovely"])
EVAL_WORDS = (["mediocre", "lousy", "unwatchable", "weak", "tiresome"],
              ["outstanding", "charming", "marvelous", "beautiful", "impressive"])


def write_sentiment(path, n, words, seed):
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter="\t")
        writer.writerow(["text", "label"])
        for i in range(n):
            label = i % 2
            text = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(words[label])}"
            writer.writerow([text, "positive" if label else "negative"])
    return str(path)


# -- numbers (translate)

ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
        "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(n: int) -> str:
    """English words for 0 <= n < 1000 ("three hundred forty two")."""
    words = []
    if n >= 100:
        words += [ONES[n // 100], "hundred"]
        n %= 100
        if n == 0:
            return " ".join(words)
    if n >= 20:
        words.append(TENS[n // 10])
        if n % 10:
            words.append(ONES[n % 10])
    else:
        words.append(ONES[n])
    return " ".join(words)


def write_number_pairs(path, numbers):
    """Digits -> words ("342<TAB>three hundred forty two"): targets of 1-5 words, so BLEU has 4-grams."""
    with open(path, "w", encoding="utf-8") as fh:
        for n in numbers:
            fh.write(f"{n}\t{number_words(n)}\n")
    return str(path)


# -- question answering (bert_qa)

def squad_doc(paragraphs):
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}


SYLLABLES = ["ka", "lo", "mi", "ren", "to", "sa", "vel", "dor", "an", "is", "ber", "nu", "qua", "zel", "pho",
             "tri", "gan", "mo", "ul", "fen"]


def made_up_words(n, seed, avoid=()):
    """Capitalized invented words (names, cities): the model must read the sentence, not remember the word."""
    rng = random.Random(seed)
    words = []
    while len(words) < n:
        w = "".join(rng.sample(SYLLABLES, rng.randint(2, 3))).capitalize()
        if w not in words and w not in avoid:
            words.append(w)
    return words


PEOPLE, CITIES = made_up_words(80, 0), made_up_words(60, 1)
HELD_PEOPLE = made_up_words(10, 2, avoid=PEOPLE + CITIES)
HELD_CITIES = made_up_words(10, 3, avoid=PEOPLE + CITIES + HELD_PEOPLE)


def write_people(path, n, people, cities, seed):
    """Templated paragraphs about two people; questions on birth place, year and job."""
    rng = random.Random(seed)
    jobs = ["engineer", "teacher", "painter", "doctor", "pilot", "writer"]
    paragraphs = []
    for k in range(n):
        a, b = rng.sample(people, 2)
        ca, cb = rng.sample(cities, 2)
        ya, yb = rng.randint(1800, 1999), rng.randint(1800, 1999)
        ja = rng.choice(jobs)
        context = (f"{a} was born in {ca} in {ya} and later worked as a {ja}. "
                   f"Her friend {b} was born in {cb} in {yb}.")
        qas = []
        for q, ans in ((f"Where was {a} born?", ca), (f"In which year was {b} born?", str(yb)),
                       (f"What did {a} work as?", ja), (f"Where was {b} born?", cb)):
            start = context.index(ans) if ans != cb else context.rindex(ans)
            qas.append({"id": f"{seed}-{k}-{len(qas)}", "question": q,
                        "answers": [{"text": ans, "answer_start": start}]})
        paragraphs.append({"context": context, "qas": qas})
    path.write_text(json.dumps(squad_doc(paragraphs)))
    return str(path)


def write_people_v2(path, n, people, cities, seed):
    """write_people plus one unanswerable question per paragraph (SQuAD 2.0): a third person's birthplace."""
    path = write_people(path, n, people, cities, seed)
    doc = json.loads(open(path).read())
    doc["version"] = "v2.0"
    rng = random.Random(seed + 100)
    for k, paragraph in enumerate(doc["data"][0]["paragraphs"]):
        absent = rng.choice([p for p in people if p not in paragraph["context"]])
        paragraph["qas"].append({"id": f"{seed}-{k}-none", "question": f"Where was {absent} born?",
                                 "answers": [], "is_impossible": True})
    open(path, "w").write(json.dumps(doc))
    return path
