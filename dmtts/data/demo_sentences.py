"""Distinct English sentences for the demo corpus: a seeded grammar with a large vocabulary.

A TTS model trained on a corpus whose sentences recur learns to recognise sentences instead of
reading them: the bag of phonemes identifies the sentence, and the order of the phonemes stops
mattering (the reversed-text loss equals the correct-text loss). Real corpora give every
utterance its own sentence; this generator does the same for the synthetic demo corpus:

* every sentence it returns is distinct (a set guards it), and the sentences of one call can
  be dealt out to speakers and splits so that no text occurs twice in the corpus;
* about 50 sentence shapes with slots drawn from lists of several hundred common words, so
  that the same word appears in many contexts and one context holds many words;
* numbers, dates, times, money and abbreviations occur as in real text and are spelled out by
  :func:`dmtts.text.tts_input_norm.normalize_english` before synthesis, so what the synthesizer says
  is exactly the transcript (:func:`spoken_sentences`).
"""

from __future__ import annotations

import random

from dmtts.text.tts_input_norm import normalize_english

NAMES = (
    "Anna", "Thomas", "Margaret", "Doctor Reyes", "Mister Holloway", "Clara", "the captain", "old Peter",
    "Missus Lindqvist", "the young engineer", "Samuel", "Eleanor", "Victor", "Rosa", "Henry", "Julia",
    "the baker", "my brother", "her aunt", "the old sailor", "Professor Grant", "Lucy", "Oliver",
    "the mayor", "a tall stranger", "the night guard", "our neighbour", "Daniel", "Grace", "Martin",
    "the farmer", "the teacher", "Sophie", "Walter", "the doctor", "Isaac", "Helen", "the pilot",
    "the children", "his sister", "Frank", "Nora", "the gardener", "Arthur", "Emily", "the shopkeeper",
)
PLACES = (
    "the harbour", "Boston", "the north tower", "a small village", "the station", "Lake Geneva",
    "the public library", "the mountain pass", "Chicago", "the market square", "the old mill",
    "the kitchen", "the garden", "the museum", "London", "the river bank", "the hospital", "Paris",
    "the school yard", "the forest", "the bridge", "the bakery", "the castle", "the beach",
    "the office", "the train", "the hotel lobby", "the farm", "the church", "the valley", "Denver",
    "the airport", "the cellar", "the village hall", "the theatre", "the island", "the desert",
    "the city park", "the factory", "Rome", "the lighthouse", "the post office", "the camp",
)
THINGS = (
    "a brass lantern", "three silver coins", "the old map", "a basket of apples", "the broken clock",
    "a letter with no stamp", "twelve candles", "the wooden chest", "a red umbrella", "the blue kettle",
    "a pair of boots", "the heavy suitcase", "a jar of honey", "the family photograph", "a loaf of bread",
    "the silver key", "a small radio", "the painted box", "a bag of flour", "the green bicycle",
    "an empty bottle", "the leather jacket", "a bunch of flowers", "the copper pot", "a paper kite",
    "the iron gate", "a glass of milk", "the spare tyre", "a roll of string", "the wedding ring",
    "a stack of books", "the kitchen knife", "a warm blanket", "the garden hose", "a tin of paint",
    "the fishing rod", "a bowl of soup", "the violin", "a pocket watch", "the yellow notebook",
    "a cup of tea", "the train ticket", "a wooden spoon", "the oil lamp", "a box of matches",
)
ANIMALS = (
    "the dog", "a black cat", "the horse", "two geese", "a fox", "the goat", "an owl", "the cow",
    "a rabbit", "the donkey", "a crow", "the sheep", "a young deer", "the pig", "a mouse", "the hen",
)
VERBS = (
    "found", "carried", "forgot", "repaired", "sold", "painted", "hid", "borrowed", "cleaned",
    "dropped", "opened", "wrapped", "bought", "lost", "moved", "washed", "stole", "returned",
    "packed", "checked", "broke", "fixed", "counted", "polished", "weighed", "buried", "lifted",
)
ACTIONS = (
    "sang a song", "read the news", "baked a cake", "wrote a letter", "fed the birds",
    "fixed the roof", "played the piano", "climbed the hill", "swept the floor", "lit the fire",
    "walked the dog", "closed the shop", "crossed the street", "called a friend", "missed the bus",
    "planted a tree", "cooked dinner", "painted the fence", "caught a fish", "locked the door",
    "watched the rain", "told a story", "drew a picture", "opened the windows", "took a nap",
)
ADJECTIVES = (
    "quiet", "bright", "cold", "strange", "crowded", "peaceful", "windy", "golden", "dark", "busy",
    "narrow", "warm", "empty", "noisy", "gentle", "lonely", "muddy", "sunny", "rainy", "famous",
    "tiny", "huge", "clean", "dusty", "modern", "ancient", "silent", "cheerful", "grey", "lovely",
)
ADVERBS = ("slowly", "quickly", "carefully", "quietly", "happily", "suddenly", "loudly", "gently",
           "nervously", "proudly", "calmly", "eagerly")
FEELINGS = ("tired", "happy", "worried", "hungry", "angry", "surprised", "proud", "nervous",
            "sleepy", "curious", "afraid", "excited")
COLOURS = ("red", "blue", "green", "yellow", "white", "black", "brown", "purple", "orange", "pink")
WEATHER = ("rain", "snow", "fog", "wind", "sunshine", "thunder", "hail", "frost")
TIMES = ("in the morning", "at noon", "after lunch", "before dinner", "late at night", "at dawn",
         "on Sunday", "on Monday", "last winter", "every Friday", "that afternoon", "next spring")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
            "tenth", "eleventh", "twelfth")

TEMPLATES = (
    "{name} {verb} {thing} in {place}.",
    "{name} {verb} {thing} {time}.",
    "On the {ordinal} of {month}, {name} arrived at {place} with {thing}.",
    "Why did {name} leave {place} so early? Nobody knew.",
    "The ticket cost ${dollars}.{cents}, which seemed {adj} for such a short trip.",
    "In {year}, {name} walked {num} miles to reach {place}.",
    "\"Wait here,\" said {name}, \"I will be back in {num} minutes.\"",
    "It was a {adj} evening, and the streets of {place} were almost empty.",
    "{name} counted {num} boats, {num2} carts and one {adj} horse!",
    "Room {num} is on the {ordinal} floor, next to {thing}.",
    "The temperature dropped to {small} degrees before midnight.",
    "By the {decade}, {place} had grown into a {adj} town of {big} people.",
    "{name} asked whether {thing} could be {verb} before {month}.",
    "Please call {name} after {hour} o'clock.",
    "About {pct} percent of the visitors to {place} came by train.",
    "After {num} years, {name} finally {verb} {thing}, and smiled.",
    "The report, dated {month} {day_num}, {year}, described a {adj} winter.",
    "{animal} {adverb} followed {name} to {place}.",
    "{name} felt {feeling} when {animal} ran into {place}.",
    "Have you seen {thing} that {name} {verb} yesterday?",
    "{name} {action} while {name2} {action2}.",
    "We {action} {time}, then went to {place}.",
    "The {colour} door of {place} was open {time}.",
    "There was {weather} over {place} for {num} days.",
    "{name} said that {thing} belonged to {name2}.",
    "If the {weather} stops, {name} will {action_base}.",
    "{name} never {verb} anything in {place}.",
    "Nobody believed that {animal} had {verb2} {thing}.",
    "The {adj} house near {place} has {num} windows.",
    "{name} and {name2} met at {place} {time}.",
    "Is it true that {name} {action}?",
    "Every {weekday}, {name} {action} at {place}.",
    "{name} was too {feeling} to notice {thing}.",
    "Under the {adj} sky, {name} {adverb} {action}.",
    "The {colour} car stopped in front of {place}.",
    "{name} gave {thing} to {name2} and left.",
    "Without a word, {name} {verb} {thing}.",
    "{name} wondered how {animal} got into {place}.",
    "It took {num} hours to reach {place} in the {weather}.",
    "{name} kept {thing} in a {colour} box under the bed.",
    "My favourite place is {place}, because it is so {adj}.",
    "Which one of you {verb} {thing}?",
    "The {adj} story of {name} began in {place}.",
    "{name} laughed, and {name2} {adverb} {action}.",
    "They sold {thing} for {num} dollars at {place}.",
    "Before {month}, {name} had never seen {place}.",
    "{name} {adverb} opened {thing} and looked inside.",
    "Nobody in {place} could remember a {adj} {season} like this one.",
    "At {hour} {ampm}, the bells of {place} began to ring.",
    "{name} wrote {num} letters to {name2} in {year}.",
)

_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_SEASONS = ("winter", "summer", "spring", "autumn")


def _base(action: str) -> str:
    """'sang a song' -> 'sing a song' for the handful of irregular past forms in ACTIONS."""
    irregular = {"sang": "sing", "read": "read", "baked": "bake", "wrote": "write", "fed": "feed",
                 "fixed": "fix", "played": "play", "climbed": "climb", "swept": "sweep", "lit": "light",
                 "walked": "walk", "closed": "close", "crossed": "cross", "called": "call",
                 "missed": "miss", "planted": "plant", "cooked": "cook", "painted": "paint",
                 "caught": "catch", "locked": "lock", "watched": "watch", "told": "tell", "drew": "draw",
                 "opened": "open", "took": "take"}
    verb, _, rest = action.partition(" ")
    return f"{irregular.get(verb, verb)} {rest}".strip()


def _fill(template: str, rng: random.Random) -> str:
    name, name2 = rng.sample(NAMES, 2)
    action, action2 = rng.sample(ACTIONS, 2)
    verb, verb2 = rng.sample(VERBS, 2)
    text = template.format(
        name=name, name2=name2, verb=verb, verb2=verb2, thing=rng.choice(THINGS), place=rng.choice(PLACES),
        animal=rng.choice(ANIMALS), adj=rng.choice(ADJECTIVES), adverb=rng.choice(ADVERBS),
        feeling=rng.choice(FEELINGS), colour=rng.choice(COLOURS), weather=rng.choice(WEATHER),
        time=rng.choice(TIMES), action=action, action2=action2, action_base=_base(action),
        month=rng.choice(MONTHS), ordinal=rng.choice(ORDINALS), day_num=rng.randint(1, 28),
        dollars=rng.randint(2, 99), cents=f"{rng.randint(1, 99):02d}", year=rng.randint(1850, 2023),
        num=rng.randint(2, 60), num2=rng.randint(2, 20), small=rng.randint(1, 30),
        decade=f"{rng.randint(185, 201)}0s", big=rng.randint(900, 90000), hour=rng.randint(1, 11),
        pct=rng.randint(5, 95), weekday=rng.choice(_WEEKDAYS), season=rng.choice(_SEASONS),
        ampm=rng.choice(("in the morning", "in the evening")),
    )
    return text[0].upper() + text[1:]


def generate_sentences(count: int, seed: int) -> list[str]:
    """``count`` distinct sentences in written form (digits, ``$``), deterministic per seed."""
    rng = random.Random(seed)
    sentences: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(sentences) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise RuntimeError(f"the sentence grammar cannot produce {count} distinct sentences")
        text = _fill(rng.choice(TEMPLATES), rng)
        key = text.lower()
        if key not in seen:
            seen.add(key)
            sentences.append(text)
    return sentences


def spoken_sentences(count: int, seed: int) -> list[str]:
    """``count`` distinct sentences in spoken form: numbers, money and dates spelled out by the
    TTS front-end's normaliser. The synthesizers read this text as it is, so the transcript is
    what was said (flite and festival expand digits their own way, e.g. '$3.50' without 'and')."""
    out: list[str] = []
    seen: set[str] = set()
    for text in generate_sentences(2 * count + 100, seed):
        spoken = normalize_english(text)
        if spoken.lower() not in seen:
            seen.add(spoken.lower())
            out.append(spoken)
        if len(out) == count:
            return out
    raise RuntimeError(f"the sentence grammar cannot produce {count} distinct spoken sentences")


# Hand-written sentences outside the grammar above (other words, other shapes), for checking
# that a model trained on the demo corpus reads text it was never shaped for.
UNSEEN_SENTENCES = (
    "Fresh bread smells wonderful when it comes out of the oven.",
    "The committee will vote on the new proposal next week.",
    "She practised the piano every evening until her fingers ached.",
    "Please remember to switch off the lights before you leave.",
    "The volcano had been sleeping quietly for hundreds of years.",
    "Our football team won the championship after a difficult season.",
    "He spilled coffee all over his keyboard during the meeting.",
    "The museum opens early on weekends during the summer holidays.",
    "A gentle breeze carried the scent of roses across the courtyard.",
    "They argued for hours about the best route through the mountains.",
    "The scientist carefully recorded every measurement in her journal.",
    "Thunderstorms are expected across the northern region tonight.",
)
