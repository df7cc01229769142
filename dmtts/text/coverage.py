"""Text whose phonemes cover English, to seed a new phoneme symbol table.

A symbol table built only from a training corpus lacks whatever that corpus never says (a
synthetic corpus of templated sentences misses rare vowels and stress patterns); a prompt
transcript from a user's recording then maps those phonemes to ``<unk>``. ``dmtts phonemize``
therefore starts a new table with the phonemes of :data:`COVERAGE_TEXT`: the IPA's "North Wind
and the Sun" passage (public domain) and words for every vowel of the standard lexical sets
(Wells), every consonant, syllabic consonants and stressed/unstressed forms.
"""

from __future__ import annotations

COVERAGE_TEXT = (
    "The North Wind and the Sun were disputing which was the stronger, when a traveler came along "
    "wrapped in a warm cloak. They agreed that the one who first succeeded in making the traveler "
    "take his cloak off should be considered stronger than the other. Then the North Wind blew as "
    "hard as he could, but the more he blew the more closely did the traveler fold his cloak around "
    "him; and at last the North Wind gave up the attempt. Then the Sun shined out warmly, and "
    "immediately the traveler took off his cloak. And so the North Wind was obliged to confess that "
    "the Sun was the stronger of the two. "
    "Kit, dress, trap, lot, strut, foot, bath, cloth, nurse, fleece, face, palm, thought, goat, goose, "
    "price, choice, mouth, near, square, start, north, force, cure, happy, letter, comma, horses. "
    "Measure, vision, beige, genre, azure, judge, church, thin, this, sing, hanger, yes, huge, human, "
    "rhythm, button, bottle, little, water, butter, city, loch, Bach, tour, poor, pure, lure, boy, "
    "coin, foyer, cow, ouch, eye, idea, area, museum, theory, really, usual, actually, February, "
    "envelope, onion, azalea, oasis, chaos, naive, cooperate, reenter, unusual, zoo, zebra, xylophone, "
    "quick, squirrel, whether, whistle, wool, woman, women, bird, word, heard, err, hour, our, fire, "
    "tired, player, lawyer, employer, mirror, hurry, worry, Sarah, carry, marry, merry, Mary, ferry, "
    "furry, oil, toy, point, alloy, pleasure, treasure, garage, massage, regime, Asia, Persian. "
    "Photograph, photography, photographic; record, record; present, present; object, object. "
    "Okay, uh-huh, hmm, gee, wow, oops, yeah, nope."
)
