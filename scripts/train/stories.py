"""Deterministic generator of short, simple children's stories (TinyStories-like).

Pure standard library.  Everything is driven by a `random.Random` so output is
reproducible for a given seed.

    story(rng) -> str                 one story (80-250 words)
    stories(n, seed) -> list[str]     n stories from one seed
    dialogue(rng) -> list[dict]       OpenAI-style chat messages

Grammar helpers take care of a/an, pronouns (he/she for single characters,
"they" for groups) and sentence capitalisation; all narration is in the past
tense.
"""

from __future__ import annotations

import random
import re

# ---------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------


def _w(s: str) -> list[str]:
    return s.split()


GIRL_NAMES = _w(
    "Lily Mia Emma Sara Anna Lucy Zoe Ella Amy Sophie Chloe Grace Ruby Rosie Daisy Molly "
    "Ava Lola Nora Ivy Hannah Kate Jenny Maya Eva Alice Julia Nina Tina Clara Leah Bella "
    "Hazel Poppy Millie Jane Sally Susie Lisa Kim Rita Rose Olivia Layla Sophia Amelia Isla "
    "Freya Alma Maria Elsa Pia Tara Beth Abby Holly Jade Megan Fiona Wendy Greta Lena Mara "
    "Nell Penny Ada Iris Luna Stella Willow Hattie Kitty Dora Flora Gina Heidi Josie"
)
BOY_NAMES = _w(
    "Tom Ben Max Leo Sam Jack Tim Finn Noah Jake Luke Adam Eli Ollie Harry Oscar Theo "
    "Alex Danny Billy Bobby Charlie Henry Jacob Liam Mark Nick Owen Pete Ryan Toby Will "
    "Zack Milo Hugo Felix Arlo Jamie Joe Kevin Lucas Mason Omar Paul Ravi Simon Teddy "
    "Victor Ethan Dylan Evan Frank George Ian Jim Kai Louis Matt Ned Otto Rex Ted Ward "
    "Benny Rocky Timmy Jonah Caleb Aaron Ari Basil Cody Dev Gus Hank Iggy"
)
PET_NAMES_F = _w("Daisy Bella Lulu Coco Fluffy Misty Penny Rosie Bubbles Sunny Pearl Minnie Nibbles Dot Tilly Honey")
PET_NAMES_M = _w("Max Buddy Rocky Spot Fuzzy Pip Oscar Biscuit Ziggy Patch Rusty Bingo Chip Tiger Pepper Sparky")

# animal: (sound, home, food, move-verb past, baby-ish adjective)
ANIMALS = {
    "cat": ("meow", "a cosy house", "fish", "ran"),
    "dog": ("woof", "a little house", "a bone", "ran"),
    "puppy": ("woof", "a little house", "a bone", "ran"),
    "kitten": ("meow", "a warm house", "milk", "ran"),
    "bunny": ("squeak", "a hole under a tree", "carrots", "hopped"),
    "bird": ("tweet", "a nest in a tall tree", "seeds", "flew"),
    "duck": ("quack", "a pond near a farm", "bread", "waddled"),
    "frog": ("ribbit", "a green pond", "bugs", "hopped"),
    "bear": ("growl", "a big forest", "honey", "walked"),
    "fox": ("yip", "a den in the woods", "berries", "ran"),
    "mouse": ("squeak", "a hole in the wall", "cheese", "ran"),
    "owl": ("hoot", "an old oak tree", "seeds", "flew"),
    "pig": ("oink", "a farm", "apples", "ran"),
    "cow": ("moo", "a big farm", "grass", "walked"),
    "horse": ("neigh", "a red barn", "hay", "trotted"),
    "sheep": ("baa", "a green field", "grass", "walked"),
    "lion": ("roar", "the jungle", "meat", "ran"),
    "tiger": ("roar", "the jungle", "meat", "ran"),
    "elephant": ("toot", "a wide plain", "peanuts", "walked"),
    "monkey": ("ooh ooh", "the jungle", "bananas", "climbed"),
    "giraffe": ("hum", "a sunny plain", "leaves", "walked"),
    "turtle": ("hiss", "a quiet pond", "lettuce", "crawled"),
    "squirrel": ("chitter", "a tall tree", "nuts", "ran"),
    "deer": ("bleat", "a quiet forest", "grass", "ran"),
    "hen": ("cluck", "a farm", "corn", "ran"),
    "goat": ("maa", "a hill", "grass", "jumped"),
    "penguin": ("squawk", "a cold, icy place", "fish", "waddled"),
    "dolphin": ("click", "the blue sea", "fish", "swam"),
    "fish": ("blub", "a clear river", "tiny bugs", "swam"),
    "bee": ("buzz", "a hive in a garden", "honey", "flew"),
    "ladybug": ("hum", "a big garden", "tiny bugs", "flew"),
    "hedgehog": ("sniff", "a pile of leaves", "bugs", "walked"),
    "panda": ("squeak", "a bamboo forest", "bamboo", "walked"),
    "koala": ("grunt", "a gum tree", "leaves", "climbed"),
    "otter": ("squeak", "a fast river", "fish", "swam"),
    "beaver": ("slap", "a river", "sticks", "swam"),
    "dragon": ("roar", "a cave on a mountain", "apples", "flew"),
    "dinosaur": ("roar", "a green valley", "leaves", "stomped"),
    "unicorn": ("neigh", "a magic meadow", "apples", "ran"),
    "snail": ("...", "a wet garden", "leaves", "crawled"),
    "crab": ("click", "a sandy beach", "seaweed", "walked"),
    "seal": ("arf", "a rocky beach", "fish", "swam"),
    "rabbit": ("squeak", "a field", "carrots", "hopped"),
    "puppy dog": ("woof", "a little house", "a bone", "ran"),
}
ANIMALS.pop("puppy dog")
ANIMAL_KINDS = list(ANIMALS)
FLYERS = {"bird", "owl", "bee", "ladybug", "dragon"}
SWIMMERS = {"fish", "dolphin", "otter", "seal", "beaver"}

COLOURS = _w("red blue green yellow pink purple orange white brown gray gold silver black")

# toys / things a character can own: (noun, colourable, adjectives)
TOYS = [
    ("ball", True, "big little bouncy shiny new"),
    ("kite", True, "big pretty long new"),
    ("doll", False, "pretty little soft old"),
    ("teddy bear", False, "soft fluffy old little"),
    ("toy car", True, "fast little shiny new"),
    ("toy train", True, "long shiny little new"),
    ("balloon", True, "big round shiny"),
    ("hat", True, "funny big warm little"),
    ("scarf", True, "long warm soft"),
    ("book", True, "big old thick funny"),
    ("drum", True, "little loud shiny"),
    ("toy boat", True, "little wooden fast"),
    ("robot", True, "shiny little funny"),
    ("yo-yo", True, "shiny little fast"),
    ("blanket", True, "soft warm fluffy"),
    ("bucket", True, "little plastic"),
    ("umbrella", True, "big little"),
    ("backpack", True, "little new"),
    ("whistle", True, "shiny little loud"),
    ("bike", True, "new shiny little fast"),
    ("crown", True, "shiny pretty little"),
    ("wand", True, "magic shiny little"),
    ("spinning top", True, "little shiny fast"),
    ("puzzle", False, "big hard new"),
    ("toy plane", True, "little fast shiny"),
    ("stuffed rabbit", True, "soft fluffy old"),
    ("music box", True, "little pretty old"),
    ("jump rope", True, "long new"),
    ("rocket", True, "shiny toy little"),
    ("shovel", True, "little plastic"),
]
TOYS = [(n, c, a.split()) for n, c, a in TOYS]
NO_CARRY_WHEN_SWIMMING = {"bike", "puzzle", "book"}

# small things found on the ground
FINDS = _w("shell feather stone key coin button leaf acorn pinecone marble ribbon bell ring map rock")

# food: (phrase, pronoun for it, is_plural)
FOODS = [
    ("an apple", "it"), ("a banana", "it"), ("some cookies", "them"), ("a piece of cake", "it"),
    ("some bread", "it"), ("a bowl of soup", "it"), ("a slice of pie", "it"), ("a sandwich", "it"),
    ("some ice cream", "it"), ("some carrots", "them"), ("some grapes", "them"), ("a piece of cheese", "it"),
    ("a slice of pizza", "it"), ("some honey", "it"), ("a glass of milk", "it"), ("some pancakes", "them"),
    ("some strawberries", "them"), ("an orange", "it"), ("a muffin", "it"), ("some popcorn", "it"),
    ("some berries", "them"), ("a peach", "it"), ("a pear", "it"), ("some cherries", "them"),
    ("a cupcake", "it"), ("a cup of lemonade", "it"), ("some toast with jam", "it"), ("some nuts", "them"),
    ("a big red apple", "it"), ("a cookie", "it"), ("a plum", "it"), ("some noodles", "them"),
    ("a bowl of rice", "it"), ("a warm bun", "it"), ("some corn", "it"), ("a slice of melon", "it"),
    ("a lollipop", "it"), ("some crackers", "them"), ("a cheese sandwich", "it"), ("some peas", "them"),
]
NEW_FOODS = _w("broccoli spinach mushrooms olives beans peas fish soup salad beets carrots")
NEW_FOODS_PLURAL = {"mushrooms", "olives", "beans", "peas", "beets", "carrots"}

# places: name, article phrase, things seen (plural), things done (past VP)
PLACES = {
    "park": ("the park", _w("swings slides ducks trees flowers benches dogs"),
             ["played on the swings", "went down the slide", "ran on the grass", "fed the ducks", "played tag"]),
    "beach": ("the beach", _w("waves shells crabs boats seagulls rocks"),
              ["built a sand castle", "splashed in the waves", "looked for shells", "dug a big hole", "ran on the sand"]),
    "zoo": ("the zoo", _w("lions monkeys elephants giraffes penguins zebras bears"),
            ["watched the monkeys", "fed the goats", "waved at the lions", "looked at the penguins"]),
    "farm": ("the farm", _w("cows pigs hens sheep horses goats ducks"),
             ["fed the hens", "petted a baby goat", "rode on a tractor", "picked apples", "collected eggs"]),
    "forest": ("the forest", _w("trees birds mushrooms squirrels flowers rabbits"),
               ["walked on a long path", "picked some berries", "listened to the birds", "climbed over a log"]),
    "lake": ("the lake", _w("ducks fish boats frogs swans"),
             ["threw stones into the water", "went for a ride in a boat", "fed the swans", "looked for frogs"]),
    "garden": ("the garden", _w("flowers bees butterflies worms vegetables"),
               ["watered the flowers", "dug in the dirt", "picked some peas", "chased butterflies"]),
    "playground": ("the playground", _w("swings slides ladders kids"),
                   ["climbed the ladder", "went down the big slide", "played in the sandbox", "swung on the swings"]),
    "library": ("the library", _w("books pictures maps"),
                ["read a book about dinosaurs", "listened to a story", "looked at picture books"]),
    "market": ("the market", _w("apples oranges flowers cheeses breads"),
               ["bought some fruit", "looked at the flowers", "tasted some cheese"]),
    "river": ("the river", _w("fish ducks rocks boats"),
              ["threw sticks into the water", "looked for fish", "sat on a big rock"]),
    "meadow": ("the meadow", _w("flowers butterflies bees rabbits"),
               ["picked flowers", "rolled down a hill", "chased butterflies", "had a picnic"]),
    "hill": ("the big hill", _w("clouds birds trees"),
             ["rolled down the grass", "flew a kite", "looked at the clouds"]),
    "pond": ("the pond", _w("frogs ducks fish lily pads"),
             ["watched the frogs", "fed the ducks", "looked at the fish"]),
    "fair": ("the fair", _w("rides balloons clowns lights"),
             ["rode on the merry-go-round", "ate cotton candy", "won a small prize"]),
    "museum": ("the museum", _w("dinosaur bones paintings statues"),
               ["looked at the dinosaur bones", "saw old paintings", "learned about the stars"]),
    "aquarium": ("the aquarium", _w("fish sharks turtles jellyfish"),
                 ["watched the sharks", "looked at the jellyfish", "touched a starfish"]),
    "mountain": ("the mountain", _w("rocks trees goats clouds"),
                 ["walked up a steep path", "looked down at the valley", "threw a snowball"]),
    "bakery": ("the bakery", _w("cakes buns cookies pies"),
               ["smelled the warm bread", "picked a cupcake", "watched the baker"]),
    "toy shop": ("the toy shop", _w("dolls trains balls robots"),
                 ["looked at the toy trains", "played with a robot", "picked a small toy"]),
    "grandma": ("Grandma's house", _w("cats flowers pictures cookies"),
                ["baked cookies with Grandma", "played in the garden", "listened to Grandma's stories"]),
    "castle": ("the old castle", _w("towers flags stairs knights"),
               ["climbed the tall stairs", "looked out of a tower", "played knights and dragons"]),
    "island": ("the little island", _w("palm trees shells birds crabs"),
               ["looked for treasure", "swam in the warm water", "found pretty shells"]),
    "backyard": ("the backyard", _w("flowers birds bugs trees"),
                 ["played in the sprinkler", "built a fort", "looked for bugs"]),
    "school": ("school", _w("friends books crayons desks"),
               ["painted a picture", "sang a song", "played in the yard"]),
    "circus": ("the circus", _w("clowns acrobats elephants"),
               ["laughed at the clowns", "watched the acrobats", "ate popcorn"]),
    "city": ("the big city", _w("buses tall buildings shops lights"),
             ["rode on a bus", "looked at the tall buildings", "visited a shop"]),
    "campsite": ("the campsite", _w("tents trees stars fireflies"),
                 ["put up a tent", "sat by the fire", "looked at the stars"]),
}
PLACE_KEYS = list(PLACES)
OUTDOOR = {"park", "beach", "zoo", "farm", "forest", "lake", "garden", "playground", "river", "meadow",
           "hill", "pond", "fair", "mountain", "island", "backyard", "campsite"}

HERO_ADJ = _w("little kind happy curious brave shy playful clever cheerful friendly gentle silly sweet busy "
              "small young funny quiet")
ANIMAL_ADJ = _w("little small fluffy happy curious brave shy playful clever friendly gentle silly young tiny")
FEEL_GOOD = _w("happy glad proud excited cheerful thankful")
FEEL_BAD = _w("sad upset worried unhappy")
TRAVEL = ["by car", "by bus", "by train", "on foot", "on their bikes"]
HIDE_SPOTS = ["under the bed", "behind the sofa", "in the toy box", "under a big tree", "behind a bush",
              "in the tall grass", "under the table", "near the fence", "by the door", "in the garden",
              "under a pile of leaves", "behind a rock", "in the kitchen", "next to the swing"]
OUT_SPOTS = ["under a big tree", "behind a bush", "in the tall grass", "near the fence", "under a pile of leaves",
             "behind a rock", "next to a bench", "by the gate", "under a bench", "near the path"]
IN_SPOTS = ["under a table", "behind a shelf", "near the door", "under a chair", "in a corner", "behind a big box",
            "next to the stairs", "under a coat"]
WEATHER_BAD = [
    ("rain", "dark clouds filled the sky and it began to rain", "The rain went pitter-patter on the window."),
    ("storm", "the wind blew hard and a big storm came", "Thunder rumbled and the trees shook."),
    ("snow", "the sky turned gray and snow began to fall", "Soon the ground was white and cold."),
    ("wind", "a strong wind started to blow", "Leaves flew everywhere and the windows rattled."),
    ("fog", "a thick fog rolled in", "Everything outside looked gray and blurry."),
]
OUT_PLANS = [
    ("have a picnic in the park", "picnic"), ("go to the beach", "beach trip"),
    ("fly a kite on the hill", "kite day"), ("play football in the park", "game"),
    ("ride bikes by the lake", "bike ride"), ("go to the zoo", "zoo trip"),
    ("play in the garden", "garden day"), ("go fishing at the river", "fishing trip"),
]
IN_ACTS = [
    "built a big fort with blankets and pillows", "baked cookies in the kitchen", "painted funny pictures",
    "made a puppet show with old socks", "did a big puzzle on the floor", "read stories under a blanket",
    "played hide-and-seek in the house", "made a paper boat", "danced to music in the living room",
    "built a tall tower with blocks", "played a board game", "drew a map of a pirate island",
]
NEW_SKILLS = [
    # (try-phrase, did-phrase, hard-part)
    ("ride a bike", "rode the bike", "The bike wobbled and {he} fell down"),
    ("swim", "swam across the pool", "{He} swallowed some water and coughed"),
    ("climb the big tree", "climbed to a high branch", "{His} foot slipped on the bark"),
    ("skate", "skated around the park", "{He} slipped and landed on the ground"),
    ("play the drum", "played a happy song on the drum", "The first sounds were very loud and messy"),
    ("bake a cake", "baked a yummy cake", "The first cake came out flat and burnt"),
    ("tie {his} shoes", "tied {his} shoes all by {himself}", "The laces got all tangled"),
    ("jump rope", "jumped rope ten times in a row", "The rope caught on {his} feet"),
    ("paint a picture", "painted a beautiful picture", "The colours ran together into a brown mess"),
    ("whistle", "whistled a little tune", "Only air came out"),
    ("dive into the pool", "dived into the water with a big splash", "{He} stood at the edge for a long time"),
    ("fly a kite", "flew the kite high in the sky", "The kite crashed into the grass"),
]
FEARS = [
    # (fear, scary-moment, reassurance, brave-act)
    ("the dark", "At night, when the light went off, the room was very dark.",
     "The dark is just the room without the light. Everything is still the same.",
     "looked around the dark room and saw only {his} toys and {his} bed"),
    ("thunder", "One night, a loud BOOM shook the windows.",
     "Thunder is just a big noise from the clouds. It cannot hurt you in here.",
     "counted the seconds between the booms and listened to the rain"),
    ("big dogs", "A big, fluffy dog ran up to {him} and barked.",
     "This dog is friendly. He just wants to say hello.",
     "held out {his} hand, and the dog licked it gently"),
    ("the water", "The waves at the beach looked so big.",
     "We will go in slowly, and I will hold your hand.",
     "stepped into the water and felt the cool waves on {his} toes"),
    ("the big slide", "The big slide at the playground looked very tall.",
     "You can go slowly. I will wait for you at the bottom.",
     "sat at the top, took a deep breath, and slid down"),
    ("spiders", "A small spider was making a web in the corner.",
     "Spiders are tiny, and they help us by eating bugs.",
     "watched the spider spin its web and thought it was pretty"),
    ("the doctor", "It was time to visit the doctor.",
     "The doctor is kind. She helps people feel better.",
     "sat very still while the doctor listened to {his} heart"),
    ("the first day of school", "The new school looked big and noisy.",
     "Everyone feels a little scared on the first day. You will make new friends.",
     "walked into the classroom and said hello to a girl by the window"),
]
TROUBLES = [
    # (problem, help-act, thanks)
    ("a kitten was stuck high up in a tree", "ran to get a grown-up, and they got the kitten down with a ladder",
     "The kitten purred and rubbed against {his} legs."),
    ("a little bird had a hurt wing", "made a soft bed in a box and gave the bird some water",
     "After a few days, the bird flew away, singing a happy song."),
    ("a duck was stuck in the mud", "found a long stick and helped the duck climb out",
     "The duck quacked and shook the mud off its feathers."),
    ("{F} fell down and hurt {fhis} knee", "helped {fhim} up and walked {fhim} home slowly",
     "{F} smiled through the tears."),
    ("{F}'s kite was stuck in a tree", "climbed onto a bench and pulled the string gently until the kite came free",
     "{F} jumped up and down with joy."),
    ("{F} could not find {fhis} way home", "held {fhis} hand and showed {fhim} the way back",
     "{F}'s mom was waiting by the gate, and she hugged {fhim} tight."),
    ("{F} dropped all {fhis} apples on the road", "helped {fhim} pick up every single apple",
     "{F} gave {him} the biggest apple to say thank you."),
    ("{F} was sad because nobody wanted to play with {fhim}", "sat next to {fhim} and asked {fhim} to play",
     "Soon {F} was laughing again."),
    ("a turtle was lying on its back and could not turn over", "gently turned the turtle back onto its feet",
     "The turtle slowly walked away to the pond."),
]
LESSONS = [
    # (warning, disobey, consequence, lesson)
    ("Do not run near the pond.", "ran along the edge of the pond", "{He} slipped and fell into the cold, muddy water",
     "it is important to listen"),
    ("Do not eat too much candy.", "ate candy after candy", "Soon {his} tummy hurt very much",
     "too much of a good thing can make you feel bad"),
    ("Do not play ball in the house.", "threw the ball in the living room", "The ball hit a vase, and it broke into pieces",
     "it is better to play ball outside"),
    ("Do not climb on the wall.", "climbed up onto the wall", "{He} fell down and scraped {his} knee",
     "grown-ups give warnings to keep us safe"),
    ("Put on your coat. It is cold outside.", "ran outside without {his} coat", "{He} was shivering in a few minutes",
     "it is smart to listen to good advice"),
    ("Do not leave your toys on the stairs.", "left {his} toys on the stairs", "{His} dad tripped over a toy car and almost fell",
     "it is important to put things away"),
    ("Do not touch the paint. It is still wet.", "touched the fresh paint on the fence", "{His} hands and shirt were covered in green paint",
     "it is good to wait and be patient"),
]
GIFTS = [
    "drew a big picture with a rainbow and a sun", "made a card with hearts and stars",
    "picked a bunch of yellow flowers", "made a necklace out of pretty beads", "baked a little cake with {his} dad",
    "wrote a short poem", "made a crown out of paper", "painted a small stone to look like a ladybug",
]
ARGUE_OVER = [
    ("the red swing", "Both of them wanted the red swing at the same time."),
    ("the last cookie", "There was only one cookie left on the plate."),
    ("what game to play", "{H} wanted to play tag, but {F} wanted to play hide-and-seek."),
    ("the blue crayon", "Both of them wanted to use the blue crayon."),
    ("who would go first", "They could not agree on who would go first in the game."),
    ("the toy truck", "{H} and {F} both grabbed the toy truck."),
]


# ---------------------------------------------------------------------------
# Grammar helpers
# ---------------------------------------------------------------------------

_AN_EXCEPT = ("uni", "use", "one", "eu", "uk", "ura", "uro")


def a(np: str) -> str:
    """Prefix a noun phrase with the right indefinite article."""
    w = np.split()[0].lower()
    if (w[0] in "aeiou" and not w.startswith(_AN_EXCEPT)) or w.startswith(("hour", "honest")):
        return "an " + np
    return "a " + np


def cap(s: str) -> str:
    for i, ch in enumerate(s):
        if ch.isalpha():
            return s[:i] + ch.upper() + s[i + 1:]
    return s


class Ch:
    """A character with pronouns."""

    def __init__(self, name: str, gender: str, kind: str, adj: str = ""):
        self.name, self.gender, self.kind, self.adj = name, gender, kind, adj
        f = gender == "f"
        self.he = "she" if f else "he"
        self.him = "her" if f else "him"
        self.his = "her" if f else "his"
        self.hers = "hers" if f else "his"
        self.himself = "herself" if f else "himself"

    @property
    def animal(self) -> bool:
        return self.kind in ANIMALS

    @property
    def noun(self) -> str:  # "girl", "boy", "cat"
        return self.kind


def fmt(s: str, h: Ch, f: Ch | None = None, **kw) -> str:
    d = {"H": h.name, "he": h.he, "him": h.him, "his": h.his, "himself": h.himself,
         "He": cap(h.he), "His": cap(h.his)}
    if f is not None:
        d.update({"F": f.name, "fhe": f.he, "fhim": f.him, "fhis": f.his, "fhimself": f.himself,
                  "Fhe": cap(f.he), "Fhis": cap(f.his)})
    d.update(kw)
    return s.format(**d)


SAY_VERBS = ["said", "said", "said", "said"]


def say(rng: random.Random, who: str, line: str, verb: str | None = None, pronoun: bool = False) -> str:
    """Render a line of dialogue with attribution.  `who` is a name or pronoun."""
    end = line[-1]
    if verb is None:
        verb = "asked" if end == "?" else rng.choice(SAY_VERBS)
    if pronoun:
        who = who.lower()
        form = rng.random()
        if form < 0.75:
            body = line[:-1] + "," if end == "." else line
            return f'"{body}" {who} {verb}.'
        return f'{cap(who)} {verb}, "{line}"'
    form = rng.random()
    body = line[:-1] + "," if end == "." else line
    if form < 0.4:
        return f'"{body}" {verb} {who}.'
    if form < 0.75:
        return f'"{body}" {who} {verb}.'
    return f'{who} {verb}, "{line}"'


def choice(rng: random.Random, seq):
    return seq[rng.randrange(len(seq))]


# ---------------------------------------------------------------------------
# Story context
# ---------------------------------------------------------------------------


class Ctx:
    pass


def make_hero(rng: random.Random, kind: str | None = None, name: str | None = None,
              gender: str | None = None) -> Ch:
    if kind is None:
        r = rng.random()
        kind = "girl" if r < 0.38 else "boy" if r < 0.76 else choice(rng, ANIMAL_KINDS)
    if kind == "girl":
        gender = "f"
    elif kind == "boy":
        gender = "m"
    elif gender is None:
        gender = "f" if rng.random() < 0.5 else "m"
    if name is None:
        if kind in ("girl", "boy"):
            name = choice(rng, GIRL_NAMES if gender == "f" else BOY_NAMES)
        else:
            pool = (PET_NAMES_F + GIRL_NAMES[:20]) if gender == "f" else (PET_NAMES_M + BOY_NAMES[:20])
            name = choice(rng, pool)
    adj = choice(rng, HERO_ADJ if kind in ("girl", "boy") else ANIMAL_ADJ)
    return Ch(name, gender, kind, adj)


def make_friend(rng: random.Random, hero: Ch) -> Ch:
    for _ in range(20):
        if hero.animal:
            kind = choice(rng, ANIMAL_KINDS) if rng.random() < 0.8 else None
        else:
            kind = None if rng.random() < 0.7 else choice(rng, ANIMAL_KINDS)
        if kind is None:
            kind = "girl" if rng.random() < 0.5 else "boy"
        f = make_hero(rng, kind)
        if f.name != hero.name and f.kind != hero.kind or (f.name != hero.name and hero.kind in ("girl", "boy")):
            return f
    return Ch("Pip", "m", "mouse", "tiny")


def toy_np(rng: random.Random, toy) -> tuple[str, str]:
    """Return (full noun phrase without article, short noun)."""
    noun, colourable, adjs = toy
    parts = []
    if rng.random() < 0.55:
        parts.append(choice(rng, adjs))
    if colourable and rng.random() < 0.6:
        parts.append(choice(rng, COLOURS))
    parts.append(noun)
    return " ".join(parts), noun


def intro_np(h: Ch) -> str:
    if h.animal:
        return f"{a(h.adj + ' ' + h.kind)} named {h.name}"
    return f"{a(h.adj + ' ' + h.kind)} named {h.name}"


def parent(rng: random.Random, h: Ch) -> Ch:
    p = choice(rng, [("Mom", "f", "mom"), ("Mom", "f", "mom"), ("Dad", "m", "dad"), ("Dad", "m", "dad"),
                     ("Grandma", "f", "grandma"), ("Grandpa", "m", "grandpa")])
    return Ch(p[0], p[1], p[2])


def friend_intro(rng: random.Random, h: Ch, f: Ch) -> str:
    if f.animal:
        return choice(rng, [f"{h.name}'s best friend was {a(f.adj + ' ' + f.kind)} named {f.name}.",
                            f"{h.name} had a friend, {a(f.kind)} named {f.name}."])
    return choice(rng, [f"{h.name}'s best friend was {f.name}.", f"{h.name} had a good friend named {f.name}.",
                        f"{h.name} had a friend called {f.name}."])


_ON = {"hill", "mountain", "island"}
_IN = {"forest", "garden", "meadow", "park", "backyard", "city"}


def at(place: str) -> str:
    """'at the zoo', 'on the big hill', 'in the forest'."""
    prep = "on" if place in _ON else "in" if place in _IN else "at"
    return f"{prep} {PLACES[place][0]}"


def pref(h: Ch, p: Ch) -> str:
    """How the narrator refers to the parent: 'her mom'."""
    return f"{h.his} {p.kind}"


# ---------------------------------------------------------------------------
# Openings and endings
# ---------------------------------------------------------------------------


def opening(rng: random.Random, c: Ctx) -> list[str]:
    h = c.h
    home = ANIMALS[h.kind][1] if h.animal else choice(rng, [
        "a small house", "a little house", "a big house", "a yellow house", "a house with a red door",
        "a cosy flat", "a little town", "a small village", "a house near the woods", "a house by the sea"])
    r = rng.random()
    if r < 0.3:
        s = [f"Once upon a time, there was {intro_np(h)}."]
    elif r < 0.5:
        s = [f"Once upon a time, in {home}, there lived {intro_np(h)}."]
        home = None
    elif r < 0.65:
        s = [f"{h.name} was {a(h.adj + ' ' + h.kind)}."]
    elif r < 0.8:
        s = [f"There was once {a(h.adj + ' ' + h.kind)} called {h.name}."]
    else:
        s = []  # start directly with "One day, ..."
        c.direct = True
        return s
    extra = []
    if home and rng.random() < 0.5:
        extra.append(fmt("{He} lived in " + home + ".", h))
    likes = []
    if h.animal:
        likes += [f"to eat {ANIMALS[h.kind][2]}", "to play in the sun", "to explore", "to sing", "to play with friends"]
    else:
        likes += ["to play outside", "to draw pictures", "to read books", "to sing songs", "to run and jump",
                  "to help " + h.his + " mom", "to build things with blocks", "to look at the stars"]
    if rng.random() < 0.6:
        extra.append(fmt("{He} loved " + choice(rng, likes) + ".", h))
    if c.toy and rng.random() < 0.5:
        extra.append(fmt("{His} favourite toy was " + a(c.toy_np) + ".", h))
        c.toy_known = True
    if rng.random() < 0.45:
        extra.append(fmt("{He} " + choice(rng, ANIMAL_LOOKS if h.animal else KID_LOOKS) + ".", h))
    if rng.random() < 0.25:
        extra.append(fmt("Every day, {he} " + choice(rng, ["smiled at everyone", "woke up early",
                                                              "asked lots of questions",
                                                              "played until the sun went down"]) + ".", h))
    rng.shuffle(extra)
    return s + extra[:3]


KID_LOOKS = ["had curly hair and a big smile", "had red hair and lots of freckles", "had long brown hair",
             "had short black hair and bright eyes", "had a gap in {his} front teeth", "wore big round glasses",
             "always wore {his} yellow boots", "had rosy cheeks and a happy laugh", "had blond hair that stuck up",
             "had dark curls and a loud laugh", "liked to wear a striped shirt", "always had a plaster on one knee"]
ANIMAL_LOOKS = ["had soft fur and a long tail", "had big round eyes", "had a little pink nose",
                "had shiny spots on {his} back", "had long ears and a fluffy tail", "had a white patch on {his} chest",
                "was very small for {his} age", "had big, strong legs", "had bright feathers" , "had a funny little tail"]
SCENES = {
    True: ["The sun was shining, and the birds were singing.", "The sky was blue, and there was not a cloud in sight.",
           "A soft wind was blowing through the trees.", "Bees buzzed around the flowers.",
           "The grass was wet with morning dew.", "The air smelled of flowers and fresh grass.",
           "White clouds drifted across the sky.", "Leaves rustled in the warm breeze.",
           "Children were laughing and playing nearby.", "The warm sun felt nice on {his} face."],
    False: ["It was warm and quiet inside.", "The room smelled of fresh bread.", "Soft music was playing.",
            "There were many people, but it was not too loud.", "Bright lamps hung from the ceiling."],
}
EXTRA_FEEL = ["{H}'s heart was beating fast.", "{H} did not know what to do.", "{H} bit {his} lip.",
              "A big tear rolled down {his} cheek.", "{H}'s tummy felt funny."]


def day_start(rng: random.Random, c: Ctx) -> str:
    w = choice(rng, ["sunny", "bright", "warm", "cool", "lovely", "windy", "sunny"])
    t = choice(rng, ["morning", "day", "afternoon"])
    return choice(rng, [f"One {w} {t},", "One day,", f"One {t},", "One day,", "Early one morning,", "On a " + w + " day,",
                        "Last summer,", "After breakfast,"])


def ending(rng: random.Random, c: Ctx, moral: str | None) -> list[str]:
    h = c.h
    out = []
    if moral and rng.random() < 0.8:
        out.append(choice(rng, [
            f"{h.name} learned that {moral}.",
            f"That day, {h.name} learned that {moral}.",
            fmt("{He} knew now that " + moral + ".", h),
            f"From then on, {h.name} always remembered that {moral}.",
        ]))
    r = rng.random()
    if r < 0.35:
        out.append(choice(rng, [
            fmt("From that day on, {he} was never " + choice(rng, ["sad", "lonely", "bored"]) + " again.", h),
            fmt("{H} went to bed with a big smile on {his} face.", h),
            "It was the best day ever.",
            fmt("{H} felt warm and happy inside.", h),
            fmt("And {H} lived happily ever after.", h),
            "The end.",
        ]))
    return out


# ---------------------------------------------------------------------------
# Story arcs.  Each returns (paragraphs, moral, facts) where paragraphs is a
# list of lists of sentences.
# ---------------------------------------------------------------------------


def arc_lost(rng: random.Random, c: Ctx):
    h, f, p = c.h, c.f, c.p
    toy, place = c.toy_np, c.place
    pname = PLACES[place][0]
    A = []
    ds = day_start(rng, c)
    A.append(fmt(f"{ds} {{H}} took {{his}} {toy} to {pname}.", h) if c.toy_known or rng.random() < 0.5 else
             fmt(f"{ds} {{H}} went to {pname} with {a(toy)}.", h))
    act = choice(rng, PLACES[place][2])
    A.append(fmt("{He} " + act + " and had lots of fun.", h) if rng.random() < 0.6 else
             fmt("{He} " + act + ". It was so much fun.", h))
    if rng.random() < 0.5:
        A.append(fmt("{He} put the " + c.toy_noun + " down " + choice(rng, ["on the grass", "on a bench", "next to a tree", "by a big rock", "on the ground"]) + " for a moment.", h))
    B = [fmt(choice(rng, ["When it was time to go home, {he} looked for {his} " + c.toy_noun + ".",
                         "After a while, {he} wanted to play with {his} " + c.toy_noun + " again.",
                         "Later, {he} reached for {his} " + c.toy_noun + "."]), h),
         choice(rng, ["But it was gone!", "But it was not there!", "It was nowhere to be found!"])]
    feel = choice(rng, FEEL_BAD)
    B.append(fmt("{H} felt very " + feel + ".", h) if rng.random() < 0.5 else
             fmt("{H} was so " + feel + " that {he} started to cry.", h))
    line = choice(rng, [f"Where is my {c.toy_noun}?", f"I lost my {c.toy_noun}!", f"Oh no! My {c.toy_noun} is gone!"])
    B.append(say(rng, h.name, line, "cried" if line.endswith("!") else None))
    spots = rng.sample(OUT_SPOTS if place in OUTDOOR else IN_SPOTS, 3)
    helper = f if rng.random() < 0.6 else p
    C = []
    if helper is f:
        C.append(fmt(f"Just then, {{F}} the {f.kind} came by." if f.animal else "Just then, {h}{F} came by.".replace("{h}", ""), h, f))
        C.append(say(rng, f.name, choice(rng, ["Why are you sad?", "What is wrong?", "Can I help you?"])))
        C.append(fmt("{H} told {fhim} about the " + c.toy_noun + ".", h, f))
        C.append(say(rng, f.name, choice(rng, ["Don't worry. I will help you look.", "Let's look for it together.",
                                               "I am good at finding things. Let's look!"])))
        who = "They"
    else:
        C.append(fmt(f"{cap(pref(h, p))} gave {{him}} a hug.", h))
        C.append(say(rng, p.name, choice(rng, ["Let's look for it together.", "Don't cry. We will find it.",
                                               "Think about where you last had it."])))
        who = "They"
    C.append(f"{who} looked {spots[0]}." if rng.random() < 0.5 else f"{who} looked {spots[0]} and {spots[1]}.")
    C.append(choice(rng, ["It was not there.", "No " + c.toy_noun + ".", "They could not find it."]))
    finder = helper if rng.random() < 0.5 else h
    D = [choice(rng, [f"Then {finder.name} saw something {spots[2]}.",
                      f"At last, {finder.name} looked {spots[2]}.",
                      f"Then {finder.name} had an idea and looked {spots[2]}."])]
    D.append(choice(rng, [f"There was the {c.toy_noun}!", f"The {c.toy_noun} was there!", f"It was the {c.toy_noun}!"]))
    if rng.random() < 0.4 and h.animal is False:
        D.append(choice(rng, ["A little dog had carried it away to play.", "The wind had blown it there.",
                              "It had rolled away when nobody was looking."]))
    D.append(say(rng, h.name, choice(rng, ["Thank you so much!", "Hooray! You found it!", "Thank you! I am so happy!"]),
                 choice(rng, ["shouted", "said", "cried"])))
    D.append(fmt("{H} hugged {his} " + c.toy_noun + " tight." if rng.random() < 0.5 else
                 "{H} held {his} " + c.toy_noun + " close and smiled.", h))
    if helper is f:
        D.append(fmt(choice(rng, ["{H} and {F} played together until the sun went down.",
                                  "Then {H} and {F} played with the " + c.toy_noun + " together."]), h, f))
        moral = choice(rng, ["good friends always help each other", "it is good to have a friend who helps",
                             "it is important to take care of your things"])
    else:
        moral = choice(rng, ["it is important to take care of your things", "you should never give up",
                             "it helps to look carefully and stay calm"])
    c.facts["lost"] = c.toy_noun
    c.facts["feel_end"] = "happy"
    return [A, B, C, D], moral


def arc_share(rng: random.Random, c: Ctx):
    h, f = c.h, c.f
    food, fpron = choice(rng, FOODS)
    use_toy = rng.random() < 0.4
    thing = f"{h.his} {c.toy_noun}" if use_toy else food
    pname = PLACES[c.place][0]
    A = [choice(rng, [f"{day_start(rng, c)} {h.name} went to {pname}.", f"{day_start(rng, c)} {h.name} was playing {at(c.place)}."])]
    if use_toy:
        A.append(fmt("{He} had {his} " + c.toy_np + " with {him}.", h))
    else:
        A.append(fmt("{He} had " + food + " in {his} bag." if rng.random() < 0.5 else "{His} mom had given {him} " + food + ".", h))
    B = [fmt(choice(rng, ["There {he} met {F}.", "{F} was there too.", "Soon {F} came over."]), h, f)]
    if f.animal:
        B[0] = fmt(choice(rng, ["There {he} met a " + f.adj + " " + f.kind + " named {F}.",
                                "A " + f.adj + " " + f.kind + " named {F} was there too."]), h, f).replace("a " + f.adj, a(f.adj))
    if use_toy:
        B.append(fmt("{F} looked at the " + c.toy_noun + ". {Fhe} did not have a toy to play with.", h, f))
        B.append(say(rng, f.name, f"Can I play with your {c.toy_noun} too?"))
    else:
        B.append(fmt("{F} looked " + choice(rng, ["hungry", "very hungry", "sad"]) + ". {Fhe} had nothing to eat.", h, f))
        B.append(say(rng, f.name, "I forgot my snack at home.", choice(rng, ["said", "sighed"])))
    C = []
    if rng.random() < 0.5:
        C.append(fmt("At first, {H} did not want to share.", h))
        C.append(fmt(choice(rng, ["{He} held " + ("the " + c.toy_noun if use_toy else "the food") + " close.",
                                  "{He} wanted to keep " + ("it" if use_toy else fpron) + " all for {himself}."]), h))
        C.append(fmt(choice(rng, ["Then {he} saw how " + choice(rng, ["sad", "lonely"]) + " {F} looked.",
                                  "Then {he} remembered what {his} mom always said: sharing is caring."]), h, f))
    line = (choice(rng, ["Here, you can play with it too.", "Let's play with it together!", "You can have a turn."])
            if use_toy else choice(rng, ["Here, we can share.", "Let's share it!", "You can have half."]))
    C.append(say(rng, h.name, line))
    C.append(fmt(choice(rng, ["{F} smiled a big smile.", "{F}'s face lit up.", "{F} was so happy."]), h, f))
    C.append(say(rng, f.name, choice(rng, ["Thank you! You are a good friend.", "Thank you!", "You are so kind!"])))
    D = []
    if use_toy:
        D.append(fmt(choice(rng, ["They took turns with the " + c.toy_noun + " all afternoon.",
                                  "They played with the " + c.toy_noun + " together, and it was much more fun than playing alone."]), h, f))
    else:
        D.append(choice(rng, ["They sat together and ate the snack.", "They ate together on a bench and laughed.",
                              "The two friends shared the food, and it tasted even better."]))
    if rng.random() < 0.5:
        D.append(fmt("The next day, {F} brought " + choice(rng, FOODS)[0] + " to share with {H}.", h, f))
    D.append(fmt("{H} felt " + choice(rng, ["warm and happy inside", "very happy", "proud"]) + ".", h))
    c.facts["shared"] = c.toy_noun if use_toy else food.split(" of ")[-1].replace("some ", "").replace("a ", "").replace("an ", "")
    c.facts["feel_end"] = "happy"
    return [A, B, C, D], choice(rng, ["sharing makes everyone happy", "it feels good to share",
                                       "sharing is caring", "a friend is better than a toy"])


def arc_new(rng: random.Random, c: Ctx):
    h, p = c.h, c.p
    if rng.random() < 0.35:
        food = choice(rng, NEW_FOODS)
        pl = food in NEW_FOODS_PLURAL
        it, was = ("them", "were") if pl else ("it", "was")
        A = [fmt(choice(rng, ["One evening, {his} " + p.kind + " made " + food + " for dinner.",
                              "At dinner, there " + was + " " + food + " on {H}'s plate."]), h)]
        A.append(fmt("{H} had never eaten " + food + " before.", h))
        A.append(say(rng, h.name, choice(rng, ["I don't like " + food + ".", "It looks funny.", "I don't want to try " + it + "."]),
                     choice(rng, ["said", "grumbled", "whispered"])))
        B = [say(rng, p.name, choice(rng, ["Just try one little bite.", "How do you know if you have never tried?",
                                           "You might like " + it + ". Try one bite."]))]
        B.append(fmt(choice(rng, ["{H} looked at the " + food + " for a long time.", "{H} took a deep breath."]), h))
        B.append(fmt("Then {he} took a tiny bite.", h))
        C = [choice(rng, [f"It was yummy!", "It tasted good!", "It was not bad at all. In fact, it was delicious!"])]
        C.append(say(rng, h.name, choice(rng, [f"I like {food}!", "Can I have some more?", "This is good!"])))
        C.append(fmt(choice(rng, ["{His} " + p.kind + " laughed and gave {him} some more.",
                                  "{His} " + p.kind + " smiled."]), h))
        c.facts["tried"] = food
        c.facts["feel_end"] = "happy"
        return [A, B, C], choice(rng, ["it is good to try new things", "you do not know if you like something until you try it"])
    sk = choice(rng, NEW_SKILLS)
    try_, did, hard = (fmt(x, h) for x in sk)
    A = [fmt(choice(rng, ["{H} wanted to learn to " + try_ + ".", "{H} had never tried to " + try_ + " before.",
                          "All of {his} friends could " + try_ + ", but {H} could not."]), h)]
    if rng.random() < 0.5:
        A.append(fmt("{He} felt a little " + choice(rng, ["scared", "nervous", "unsure"]) + ".", h))
    A.append(say(rng, h.name, choice(rng, ["What if I can't do it?", "It looks so hard.", "I want to try, but I am scared."])))
    B = [say(rng, p.name, choice(rng, ["You can do it! Just try.", "Everyone starts somewhere. I will help you.",
                                       "Let's try together. Take it slow."]))]
    B.append(fmt("So {H} tried.", h))
    B.append(hard + ".")
    if rng.random() < 0.6:
        B.append(fmt("{He} felt like giving up.", h))
    B.append(say(rng, p.name, choice(rng, ["Try again. You are getting better.", "That's okay. Mistakes help us learn.",
                                           "Don't give up!"])))
    C = [fmt(choice(rng, ["{H} tried again, and again.", "{H} tried one more time.", "So {he} tried again."]), h)]
    C.append(fmt(choice(rng, ["This time, {he} " + did + "!", "At last, {he} " + did + "!"]), h))
    C.append(say(rng, h.name, choice(rng, ["I did it!", "Look at me!", "I can do it!"]), choice(rng, ["shouted", "cried", "said"])))
    C.append(fmt("{H} felt so proud of {himself}.", h))
    c.facts["tried"] = try_
    c.facts["feel_end"] = "proud"
    return [A, B, C], choice(rng, ["if you keep trying, you can do hard things", "practice helps you get better",
                                   "it is good to try new things", "you should never give up"])


def arc_trouble(rng: random.Random, c: Ctx):
    h, f = c.h, c.f
    prob, helpact, thanks = (fmt(x, h, f) for x in choice(rng, TROUBLES))
    pname = PLACES[c.place][0]
    A = [f"{day_start(rng, c)} {h.name} " + choice(rng, ["was walking", "was playing", "went for a walk"]) + " " + at(c.place) +
         (f" with {h.his} friend {f.name}." if f.name in prob else ".")]
    A.append(fmt(choice(rng, ["Suddenly, {he} saw that " + prob + ".", "Then {he} noticed that " + prob + "."]), h))
    if rng.random() < 0.6:
        A.append(choice(rng, ["It looked scared.", "It needed help.", "Someone had to help."]) if f.name not in prob else
                 fmt(choice(rng, ["{F} started to cry.", "{F} looked very sad."]), h, f))
    B = [say(rng, h.name, choice(rng, ["Don't worry, I will help you!", "I will help!", "Hold on! I am coming!"]))]
    B.append(fmt("{H} thought hard about what to do." if rng.random() < 0.5 else "{H} was small, but {he} was brave.", h))
    B.append(fmt("Then {he} " + helpact + ".", h))
    C = [thanks]
    if f.name in prob:
        C.append(say(rng, f.name, choice(rng, ["Thank you for helping me.", "You are a true friend.", "Thank you!"])))
    else:
        C.append(fmt("{H} smiled." if rng.random() < 0.5 else "{H} felt proud that {he} had helped.", h))
    if rng.random() < 0.5:
        C.append(fmt("When {he} got home, {he} told {his} " + c.p.kind + " all about it.", h))
        C.append(say(rng, c.p.name, choice(rng, ["I am so proud of you.", "You did a kind thing today.", "You have a kind heart."])))
    c.facts["feel_end"] = "proud"
    return [A, B, C], choice(rng, ["it is good to help others", "kindness makes the world better",
                                   "helping others is what friends do"])


def arc_weather(rng: random.Random, c: Ctx):
    h, p, f = c.h, c.p, c.f
    plan, planname = choice(rng, OUT_PLANS)
    kind, how, detail = choice(rng, WEATHER_BAD)
    A = [fmt(choice(rng, ["{H} and {his} " + p.kind + " wanted to " + plan + ".",
                          "Today was the day! {H} was going to " + plan + " with {his} " + p.kind + "."]), h)]
    if rng.random() < 0.6:
        A.append(fmt("{He} was so excited that {he} could not sit still.", h))
    A.append("But then " + how + ".")
    if rng.random() < 0.6:
        A.append(detail)
    B = [say(rng, h.name, choice(rng, ["Now we can't go!", "This is not fair!", f"I wanted to {plan.split(' in ')[0].split(' on ')[0].split(' by ')[0].split(' at ')[0]}!"]),
             choice(rng, ["cried", "said", "sighed"]))]
    B.append(fmt("{H} felt " + choice(rng, ["sad", "grumpy", "very disappointed"]) + ".", h))
    if kind == "snow" and rng.random() < 0.6:
        C = [say(rng, p.name, "Look at all the snow! Let's go out and build a snowman.")]
        C.append(fmt("{H} put on {his} warm coat, {his} hat and {his} mittens.", h))
        C.append(choice(rng, ["They rolled three big balls of snow.", "They rolled the snow into big balls."]))
        C.append(choice(rng, ["They gave the snowman a carrot nose and two stone eyes.",
                              "They used sticks for arms and a scarf for the neck."]))
        C.append(fmt("{H} laughed and threw a snowball.", h))
        c.facts["did"] = "built a snowman"
    else:
        act = choice(rng, IN_ACTS)
        C = [say(rng, p.name, choice(rng, ["We can still have fun inside.", "I have an idea!", "Let's make it a fun day anyway."]))]
        C.append(choice(rng, ["So they " + act + ".", "They " + act + " together."]))
        if rng.random() < 0.5:
            C.append(fmt(choice(rng, ["{H} laughed so much.", "It was so much fun.", "{H} forgot all about the " + kind + "."]), h))
        c.facts["did"] = act
    D = []
    if rng.random() < 0.5:
        D.append(fmt(choice(rng, ["The next day, the sun came out, and they went to " + plan + " after all.".replace("went to go", "went"),
                                  "Later, the sky was clear again, and a rainbow came out."]), h))
    D.append(say(rng, h.name, choice(rng, ["This was the best day!", "Can we do this again?", "That was fun!"])))
    c.facts["weather"] = kind
    c.facts["feel_end"] = "happy"
    return [A, B, C, D], choice(rng, ["a change of plans can still be fun", "you can have fun on any kind of day",
                                      "it is good to make the best of things"])


def arc_trip(rng: random.Random, c: Ctx):
    h, p, f = c.h, c.p, c.f
    place = c.place
    pname, sights, acts = PLACES[place]
    how = choice(rng, TRAVEL)
    A = [choice(rng, [f"{day_start(rng, c)} {h.name} went to {pname} with {pref(h, p)}.",
                      f"{day_start(rng, c)} {h.name} and {pref(h, p)} went on a trip to {pname}."])]
    if rng.random() < 0.6:
        A.append(f"They went {how}.")
    if rng.random() < 0.5:
        A.append(fmt("{H} had never been to " + pname + " before." if rng.random() < 0.5 else
                     "{H} was very excited.", h))
    s1, s2 = rng.sample(sights, 2)
    B = [fmt(choice(rng, [cap(at(place)) + ", {he} saw " + s1 + " and " + s2 + ".",
                          "There were " + s1 + " and " + s2 + " everywhere.",
                          "{He} looked at the " + s1 + " and the " + s2 + "."]), h)]
    B.append(say(rng, h.name, choice(rng, [f"Look at the {s1}!", "Wow! This is amazing!", f"I like the {s2} best!"]),
                 choice(rng, ["shouted", "said"])))
    a1, a2 = rng.sample(acts, 2) if len(acts) > 1 else (acts[0], acts[0])
    B.append(fmt(choice(rng, ["Then {he} " + a1 + ".", "First, {he} " + a1 + ". Then {he} " + a2 + "."]), h))
    C = []
    if rng.random() < 0.6:
        food = choice(rng, FOODS)[0]
        C.append(fmt(choice(rng, ["For lunch, they ate " + food + ".", "Later, {his} " + p.kind + " bought {him} " + food + "."]), h))
    if rng.random() < 0.5:
        C.append(choice(rng, [f"{h.name} made a new friend named {f.name}.",
                              f"{h.name} met {a(f.kind)} named {f.name}, and they played together."]) if f.kind not in ("girl", "boy") or True else "")
        c.facts["met"] = f.name
    C.append(choice(rng, ["When the sun began to set, it was time to go home.", "At the end of the day, they went home.",
                          "Soon it was time to go home."]))
    C.append(fmt(choice(rng, ["{H} was tired but happy.", "{H} fell asleep on the way home.",
                              "That night, {H} dreamed about " + pname + "."]), h))
    if rng.random() < 0.5:
        C.append(say(rng, h.name, choice(rng, ["Can we go again soon?", "That was the best trip ever!", "Thank you for taking me!"])))
    c.facts["feel_end"] = "happy"
    c.facts["saw"] = s1
    return [A, B, C], choice(rng, [None, "there are many wonderful things to see in the world",
                                   "trips are more fun with people you love"])


def arc_surprise(rng: random.Random, c: Ctx):
    h, p, f = c.h, c.p, c.f
    who = choice(rng, [pref(h, p), f.name])
    whoc = p if who == pref(h, p) else f
    gift = fmt(choice(rng, GIFTS), h)
    A = [fmt(choice(rng, ["It was almost " + ("" if whoc is f else "") + ("{F}'s" if whoc is f else "{his} " + p.kind + "'s") + " birthday.",
                          "Tomorrow was " + ("{F}'s" if whoc is f else "{his} " + p.kind + "'s") + " birthday."]), h, f)]
    if whoc is f:
        A.insert(0, friend_intro(rng, h, f))
    A.append(fmt("{H} wanted to make a surprise.", h))
    if rng.random() < 0.5:
        A.append(fmt("{He} did not have any money to buy a present.", h))
    B = [fmt("So {he} " + gift + ".", h)]
    B.append(fmt(choice(rng, ["{He} hid it under {his} bed.", "{He} hid it behind {his} back.",
                              "{He} wrapped it in paper and tied a ribbon on top."]), h))
    if rng.random() < 0.5:
        B.append(fmt("{He} did not tell anyone, not even " + ("{his} best friend" if whoc is p else "{his} " + p.kind) + ".", h))
    C = [fmt(choice(rng, ["The next morning, {H} ran to " + (who if whoc is f else "{his} " + p.kind) + ".",
                          "When the big day came, {H} found " + (who if whoc is f else "{his} " + p.kind) + "."]), h)]
    C.append(say(rng, h.name, choice(rng, ["Surprise! Happy birthday!", "Close your eyes! I have a surprise for you.",
                                           "Happy birthday! I made this for you."]),
                 choice(rng, ["shouted", "said"])))
    C.append(choice(rng, [f"{cap(who)} was so surprised.", f"{cap(who)} opened the present and smiled."]))
    C.append(say(rng, whoc.name, choice(rng, ["It is beautiful! Thank you!", "This is the best present ever!",
                                              "You made this all by yourself? I love it!"])))
    C.append(fmt("Then " + whoc.he + " gave {H} a big hug.", h))
    c.facts["gift"] = gift
    c.facts["feel_end"] = "happy"
    return [A, B, C], choice(rng, ["the best presents come from the heart", "making someone happy makes you happy too",
                                   None])


def arc_fear(rng: random.Random, c: Ctx):
    h, p = c.h, c.p
    fear, moment, reassure, brave = (fmt(x, h) for x in choice(rng, FEARS))
    A = [fmt(choice(rng, ["{H} was afraid of " + fear + ".", "There was one thing {H} did not like: " + fear + ".",
                          "{H} was scared of " + fear + "."]), h)]
    A.append(moment)
    A.append(fmt(choice(rng, ["{H} began to shake.", "{H} wanted to run away.", "{H} hid behind {his} " + p.kind + "."]), h))
    A.append(say(rng, h.name, choice(rng, ["I am scared!", "I don't like this!", "Help!"]), choice(rng, ["cried", "whispered", "said"])))
    B = [fmt("{His} " + p.kind + " " + choice(rng, ["knelt down", "held {his} hand", "gave {him} a hug"]) + ".", h)]
    if rng.random() < 0.5:
        reassure += " " + choice(rng, ["Being brave does not mean you are not scared. It means you try anyway.",
                                       "I am right here with you."])
    B.append(say(rng, p.name, reassure))
    C = [fmt(choice(rng, ["{H} took a deep breath.", "{H} counted to three.", "{H} closed {his} eyes and then opened them again."]), h)]
    C.append(fmt("Then {he} " + brave + ".", h))
    C.append(choice(rng, ["It was not so scary after all.", "Nothing bad happened.", "It was actually fun!"]))
    C.append(say(rng, h.name, choice(rng, ["I am not scared anymore!", "I was brave!", "That was not so bad."])))
    c.facts["fear"] = fear
    c.facts["feel_end"] = "brave"
    return [A, B, C], choice(rng, ["being brave means trying even when you are scared",
                                   "things are often less scary than they seem", "it helps to talk about your fears"])


def arc_argue(rng: random.Random, c: Ctx):
    h, f = c.h, c.f
    thing, setup = choice(rng, ARGUE_OVER)
    A = [fmt(choice(rng, ["{H} and {F} were best friends.", "{H} and {F} liked to play together every day."]), h, f)
         if not f.animal else fmt("{H} and {F} the " + f.kind + " were best friends.", h, f)]
    A.append(fmt(f"{day_start(rng, c)} they were playing " + at(c.place) + ".", h, f))
    A.append(fmt(setup, h, f))
    B = [say(rng, h.name, choice(rng, ["It's mine!", "I want it!", "I had it first!"]), choice(rng, ["shouted", "said"]))]
    B.append(say(rng, f.name, choice(rng, ["No, it's my turn!", "That's not fair!", "You always go first!"]), choice(rng, ["shouted", "said"])))
    B.append(choice(rng, ["They both got angry.", "Soon they were both shouting.", "Nobody wanted to give in."]))
    B.append(fmt(choice(rng, ["{F} ran home, and {H} sat alone.", "They stopped playing and looked away from each other.",
                              "{H} stomped off, and {F} sat down with a frown."]), h, f))
    C = [fmt(choice(rng, ["After a while, {H} felt lonely.", "Playing alone was not fun at all.",
                          "{H} missed {his} friend."]), h)]
    if rng.random() < 0.5:
        C.append(fmt("{He} thought about what {he} had said.", h))
    sorry = h if rng.random() < 0.6 else f
    other = f if sorry is h else h
    C.append(fmt("{H} went to find {F}." if sorry is h else "Then {F} came back.", h, f))
    C.append(say(rng, sorry.name, choice(rng, ["I am sorry. I should not have shouted.", "I'm sorry. Can we be friends again?",
                                               "Sorry. I was not being fair."])))
    C.append(say(rng, other.name, choice(rng, ["I am sorry too.", "Me too. Let's take turns.", "Of course! I missed you."])))
    D = [choice(rng, ["They decided to take turns.", "They hugged and made up.", "They shook hands and smiled."])]
    if thing == "the last cookie":
        D.append(choice(rng, ["They broke the cookie in half and shared it.", "They shared the cookie, one half each."]))
    elif thing == "what game to play":
        D.append("First they played tag, and then they played hide-and-seek.")
    else:
        D.append(fmt("First {H} had a turn, and then {F} had a turn.", h, f))
    D.append(choice(rng, ["Playing together was much more fun.", "Soon they were laughing again.",
                          "They were friends again."]))
    c.facts["argued"] = thing
    c.facts["feel_end"] = "happy"
    return [A, B, C, D], choice(rng, ["saying sorry can fix a fight", "taking turns is fair",
                                      "friends can disagree and still be friends"])


def arc_lesson(rng: random.Random, c: Ctx):
    h, p = c.h, c.p
    warn, dis, cons, lesson = (fmt(x, h) for x in choice(rng, LESSONS))
    A = [say(rng, p.name, warn)]
    if rng.random() < 0.5:
        A.insert(0, fmt(choice(rng, ["{H} was very playful, but {he} did not always listen.",
                                     "{H} liked to do things {his} own way."]), h))
    A.append(fmt(choice(rng, ["But {H} did not listen.", "{H} nodded, but {he} was not really listening.",
                              "But {H} thought it would be fine."]), h))
    B = [fmt("{He} " + dis + ".", h)]
    B.append(cons + ".")
    B.append(say(rng, h.name, choice(rng, ["Oh no!", "Ouch!", "Uh-oh."]), choice(rng, ["cried", "said"])))
    C = [fmt("{His} " + p.kind + " came " + choice(rng, ["running", "quickly", "to see what happened"]) + ".", h)]
    C.append(fmt(choice(rng, ["{H} felt sorry.", "{H} looked down at {his} feet.", "{H} felt bad."]), h))
    C.append(say(rng, h.name, choice(rng, ["I am sorry. I should have listened.", "I'm sorry. I will listen next time."])))
    C.append(say(rng, p.name, choice(rng, ["It's okay. Everyone makes mistakes.", "I am glad you are okay.",
                                           "Thank you for saying sorry."])))
    C.append(fmt(choice(rng, ["{His} " + p.kind + " gave {him} a hug.", "They cleaned up together."]), h))
    c.facts["feel_end"] = "better"
    return [A, B, C], lesson


ARCS = {
    "lost": arc_lost, "share": arc_share, "new": arc_new, "trouble": arc_trouble, "weather": arc_weather,
    "trip": arc_trip, "surprise": arc_surprise, "fear": arc_fear, "argue": arc_argue, "lesson": arc_lesson,
}
ARC_TOPICS = {
    "lost": "losing something", "share": "sharing", "new": "trying something new", "trouble": "helping a friend",
    "weather": "a rainy day", "trip": "a trip", "surprise": "a surprise", "fear": "being brave",
    "argue": "making up after a fight", "lesson": "learning a lesson",
}

# Arcs that do not use `place` directly in their first sentence.
_PLACE_ARCS = {"lost", "share", "trouble", "trip", "argue"}


def _render(paras: list[list[str]]) -> str:
    out = []
    for p in paras:
        s = " ".join(cap(x.strip()) for x in p if x)
        if s:
            out.append(s)
    return "\n\n".join(out)


def _fix(text: str) -> str:
    text = text.replace("  ", " ").replace(" .", ".").replace(" ,", ",")
    text = text.replace("..", ".")
    return text


def make_story(rng: random.Random, kind: str | None = None, name: str | None = None, place: str | None = None,
               arc: str | None = None, toy: str | None = None, gender: str | None = None):
    """Generate one story; returns (text, ctx).  Constraints are honoured."""
    for _ in range(50):
        c = Ctx()
        c.facts = {}
        c.direct = False
        c.toy_known = False
        c.h = make_hero(rng, kind, name, gender)
        c.f = make_friend(rng, c.h)
        c.p = parent(rng, c.h)
        if c.h.animal and rng.random() < 0.5:
            c.p = Ch("Mama" if rng.random() < 0.5 else "Papa", "f", "mama")
            if c.p.name == "Papa":
                c.p = Ch("Papa", "m", "papa")
        t = None
        if toy:
            t = next((x for x in TOYS if x[0] == toy), (toy, False, []))
        else:
            t = choice(rng, TOYS)
        if c.h.animal and t[0] in ("bike",):
            t = TOYS[0]
        c.toy_np, c.toy_noun = toy_np(rng, t)
        if toy:
            c.toy_np = c.toy_np if toy in c.toy_np else toy
        c.place = place or choice(rng, PLACE_KEYS)
        a_ = arc or choice(rng, list(ARCS))
        if place and a_ not in _PLACE_ARCS and arc is None:
            a_ = choice(rng, sorted(_PLACE_ARCS))
        if toy and a_ not in ("lost", "share") and arc is None:
            a_ = "lost"
        c.arc = a_
        c.toy = a_ in ("lost", "share")
        head = opening(rng, c)
        paras, moral = ARCS[a_](rng, c)
        if c.place and a_ in _PLACE_ARCS and rng.random() < 0.6:
            sc = fmt(choice(rng, SCENES[c.place in OUTDOOR]), c.h)
            pn = PLACES[c.place][0]
            idx = next((i for i, x in enumerate(paras[0]) if pn in x), 0)
            paras[0].insert(idx + 1, sc)
        if rng.random() < 0.3 and a_ in ("lost", "fear", "lesson", "trouble") and len(paras) > 1:
            paras[1].insert(min(len(paras[1]), 2), fmt(choice(rng, EXTRA_FEEL), c.h))
        if head:
            paras = [head + paras[0]] + paras[1:] if rng.random() < 0.4 else [head] + paras
        elif not c.direct:
            pass
        else:
            # The arc's first sentence must introduce the hero properly.
            first = paras[0]
            intro = choice(rng, [f"{cap(a(c.h.adj + ' ' + c.h.kind))} named {c.h.name} lived in "
                                 + (ANIMALS[c.h.kind][1] if c.h.animal else "a small town") + ".",
                                 f"This is a story about {a(c.h.kind)} named {c.h.name}."])
            paras = [[intro] + first] + paras[1:]
        end = ending(rng, c, moral)
        if end:
            paras = paras + [end] if rng.random() < 0.5 else paras[:-1] + [paras[-1] + end]
        text = _fix(_render(paras))
        n = len(text.split())
        if 80 <= n <= 250:
            c.text = text
            return text, c
    return text, c


def story(rng: random.Random) -> str:
    return make_story(rng)[0]


def stories(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [story(rng) for _ in range(n)]


# ---------------------------------------------------------------------------
# Chat-style dialogues
# ---------------------------------------------------------------------------

FACT_COLOURS = [("the sky", "blue"), ("grass", "green"), ("the sun", "yellow"), ("a banana", "yellow"),
                ("snow", "white"), ("a strawberry", "red"), ("a carrot", "orange"), ("a lemon", "yellow"),
                ("a frog", "green"), ("milk", "white"), ("chocolate", "brown"), ("a pumpkin", "orange"),
                ("a tomato", "red"), ("a cloud", "white"), ("the sea", "blue"), ("a fire truck", "red"),
                ("a leaf", "green"), ("coal", "black"), ("a grape", "purple or green"), ("a cherry", "red")]
FACT_SOUNDS = [("cow", "moo"), ("dog", "woof"), ("cat", "meow"), ("duck", "quack"), ("sheep", "baa"),
               ("pig", "oink"), ("lion", "roar"), ("owl", "hoo"), ("horse", "neigh"), ("frog", "ribbit"),
               ("bee", "buzz"), ("mouse", "squeak"), ("hen", "cluck"), ("snake", "hiss"), ("goat", "maa")]
FACT_HOMES = [("fish", "in the water"), ("bird", "in a nest"), ("bee", "in a hive"), ("bear", "in the forest"),
              ("cow", "on a farm"), ("penguin", "in cold places with lots of ice"), ("monkey", "in the jungle"),
              ("camel", "in the desert"), ("frog", "near a pond"), ("squirrel", "in a tree"),
              ("rabbit", "in a hole in the ground"), ("whale", "in the sea")]
FACT_LEGS = [("dog", "four"), ("cat", "four"), ("bird", "two"), ("spider", "eight"), ("ant", "six"),
             ("horse", "four"), ("duck", "two"), ("bee", "six"), ("cow", "four"), ("chicken", "two")]
OPPOSITES = [("big", "small"), ("hot", "cold"), ("up", "down"), ("day", "night"), ("happy", "sad"),
             ("fast", "slow"), ("wet", "dry"), ("open", "closed"), ("tall", "short"), ("old", "new"),
             ("light", "dark"), ("loud", "quiet"), ("full", "empty"), ("in", "out"), ("soft", "hard")]
NUMS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
FIXED_QA = [
    ("What do you wear when it rains?", "When it rains, you wear a raincoat and rain boots. An umbrella helps you stay dry."),
    ("What do you wear when it snows?", "When it snows, you wear a warm coat, a hat, a scarf and mittens."),
    ("When do we sleep?", "We sleep at night, when it is dark outside."),
    ("What can we see in the sky at night?", "At night, we can see the moon and the stars."),
    ("When does the sun come up?", "The sun comes up in the morning."),
    ("What should you say when someone helps you?", "You should say thank you."),
    ("What can you do when a friend is sad?", "You can give your friend a hug and ask what is wrong. You can also play with them."),
    ("What should you do before you eat?", "You should wash your hands before you eat."),
    ("Why do we brush our teeth?", "We brush our teeth to keep them clean and strong."),
    ("What falls from the sky when it rains?", "Drops of water fall from the sky when it rains."),
    ("What is a rainbow?", "A rainbow is a big arch of colours in the sky. You can see one when the sun shines after rain."),
    ("How many days are in a week?", "There are seven days in a week."),
    ("What do bees make?", "Bees make honey."),
    ("What do cows give us?", "Cows give us milk."),
    ("What do hens lay?", "Hens lay eggs."),
    ("Is the sun hot or cold?", "The sun is very hot."),
    ("Is ice hot or cold?", "Ice is cold."),
    ("What do plants need to grow?", "Plants need water, sunlight and good soil to grow."),
    ("Hello!", "Hello! Would you like to hear a story?"),
    ("Hi!", "Hi there! How can I help you today?"),
    ("Thank you!", "You are welcome!"),
    ("Who are you?", "I am a friendly helper. I can tell you stories and answer simple questions."),
    ("What is your favourite colour?", "I like blue, like the sky on a sunny day."),
    ("What should you do if you get lost?", "If you get lost, stay where you are and ask a grown-up you trust for help."),
    ("Why is it good to share?", "Sharing is good because it makes other people happy, and it makes you happy too."),
    ("What do you say when you make a mistake?", "When you make a mistake, you can say sorry and try to do better."),
    ("What is the opposite of happy?", "The opposite of happy is sad."),
]
FRUITS = ["apple", "banana", "orange", "pear", "grape", "strawberry", "peach", "cherry", "plum", "lemon"]
VEGGIES = ["carrot", "potato", "pea", "bean", "onion", "cucumber", "tomato" ,"cabbage", "pepper"]
VEGGIES.remove("tomato")


def _fact(rng: random.Random) -> tuple[str, str]:
    r = rng.randrange(9)
    if r == 0:
        x, col = choice(rng, FACT_COLOURS)
        return choice(rng, [f"What colour is {x}?", f"What color is {x}?"]), f"{cap(x)} is {col}."
    if r == 1:
        x, s = choice(rng, FACT_SOUNDS)
        return f"What sound does {a(x)} make?", f"{cap(a(x))} says \"{s}\"."
    if r == 2:
        x, w = choice(rng, FACT_HOMES)
        if x == "fish":
            return "Where do fish live?", f"Fish live {w}."
        return f"Where does {a(x)} live?", f"{cap(a(x))} lives {w}."
    if r == 3:
        x, n = choice(rng, FACT_LEGS)
        return f"How many legs does {a(x)} have?", f"{cap(a(x))} has {n} legs."
    if r == 4:
        x, y = choice(rng, OPPOSITES)
        if rng.random() < 0.5:
            x, y = y, x
        return f"What is the opposite of {x}?", f"The opposite of {x} is {y}."
    if r == 5:
        i, j = rng.randrange(0, 10), rng.randrange(0, 10)
        if rng.random() < 0.5:
            return f"What is {NUMS[i]} plus {NUMS[j]}?", f"{cap(NUMS[i])} plus {NUMS[j]} is {NUMS[i + j]}."
        return f"What is {i} + {j}?", f"{i} + {j} = {i + j}."
    if r == 6:
        i = rng.randrange(0, 19)
        return f"What number comes after {NUMS[i]}?", f"{cap(NUMS[i + 1])} comes after {NUMS[i]}."
    if r == 7:
        if rng.random() < 0.5:
            x = choice(rng, FRUITS)
            return f"Is {a(x)} a fruit?", f"Yes, {a(x)} is a fruit."
        x = choice(rng, VEGGIES)
        return f"Is {a(x)} a fruit?", f"No, {a(x)} is a vegetable."
    return choice(rng, FIXED_QA)


_ABOUT = ["Tell me a story about {t}.", "Can you tell me a story about {t}?", "Please tell me a story about {t}.",
          "Write a short story about {t}.", "I want a story about {t}.", "Tell me a short story about {t}, please.",
          "Could you write a story for kids about {t}?"]


def _story_request(rng: random.Random) -> tuple[str, str, Ctx]:
    r = rng.randrange(7)
    if r == 0:
        k = choice(rng, ANIMAL_KINDS)
        text, c = make_story(rng, kind=k)
        topic = a(k)
    elif r == 1:
        k = choice(rng, ["girl", "boy"])
        text, c = make_story(rng, kind=k)
        topic = f"{a(k)} named {c.h.name}"
    elif r == 2:
        k = choice(rng, ANIMAL_KINDS)
        text, c = make_story(rng, kind=k)
        topic = f"{a(k)} called {c.h.name}"
    elif r == 3:
        pk = choice(rng, PLACE_KEYS)
        text, c = make_story(rng, place=pk)
        topic = PLACES[pk][0] if pk != "grandma" else "a visit to Grandma's house"
        if pk == "school":
            topic = "a day at school"
    elif r == 4:
        arc = choice(rng, list(ARCS))
        text, c = make_story(rng, arc=arc)
        topic = ARC_TOPICS[arc]
        if arc == "weather":
            topic = choice(rng, ["a rainy day", "bad weather", "a day when plans changed"])
    elif r == 5:
        t = choice(rng, TOYS)[0]
        text, c = make_story(rng, toy=t)
        topic = a(t)
    else:
        text, c = make_story(rng)
        return choice(rng, ["Tell me a story.", "Can you tell me a story?", "Tell me a bedtime story.",
                            "I want to hear a story!", "Please write a short story for a child."]), text, c
    return choice(rng, _ABOUT).format(t=topic), text, c


def _followups(rng: random.Random, c: Ctx) -> list[tuple[str, str]]:
    h = c.h
    qs = []
    if h.kind in ("girl", "boy"):
        qs.append((f"What was the {h.kind}'s name?", f"The {h.kind}'s name was {h.name}."))
    else:
        qs.append((f"What was the {h.kind}'s name?", f"The {h.kind}'s name was {h.name}."))
        qs.append((f"What kind of animal was {h.name}?", f"{h.name} was {a(h.kind)}."))
    qs.append((f"Who is the story about?", f"The story is about {a(h.kind)} named {h.name}."))
    fe = c.facts.get("feel_end")
    if fe:
        qs.append((f"How did {h.name} feel at the end?", f"At the end, {h.name} felt {fe}."))
    if "lost" in c.facts:
        qs.append((f"What did {h.name} lose?", f"{h.name} lost {h.his} {c.facts['lost']}."))
    if "fear" in c.facts:
        qs.append((f"What was {h.name} afraid of?", f"{h.name} was afraid of {c.facts['fear']}."))
    if "argued" in c.facts:
        qs.append((f"Why did {h.name} and {c.f.name} argue?", f"They argued about {c.facts['argued']}."))
    if "weather" in c.facts:
        qs.append(("What happened to the weather?", {"rain": "It started to rain.", "storm": "A big storm came.",
                                                     "snow": "It started to snow.", "wind": "A strong wind started to blow.",
                                                     "fog": "A thick fog rolled in."}[c.facts["weather"]]))
    if c.arc == "trip":
        qs.append((f"Where did {h.name} go?", f"{h.name} went to {PLACES[c.place][0]}."))
    qs.append(("Did the story have a happy ending?", "Yes, it had a happy ending."))
    rng.shuffle(qs)
    return qs[: rng.randrange(1, 3)]


def dialogue(rng: random.Random) -> list[dict]:
    """A short chat: a story request (optionally with follow-up questions) or simple Q&A."""
    msgs: list[dict] = []
    r = rng.random()
    if r < 0.6:
        if rng.random() < 0.2:
            q, ans = choice(rng, FIXED_QA[18:20])
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": ans}]
        req, text, c = _story_request(rng)
        msgs += [{"role": "user", "content": req}, {"role": "assistant", "content": text}]
        if rng.random() < 0.4:
            for q, ans in _followups(rng, c):
                msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": ans}]
        if rng.random() < 0.15:
            if rng.random() < 0.5:
                msgs += [{"role": "user", "content": choice(rng, ["Thank you!", "Thanks!"])},
                         {"role": "assistant", "content": choice(rng, ["You are welcome!", "You're welcome! Sweet dreams."])}]
            else:
                msgs += [{"role": "user", "content": choice(rng, ["I liked that story.", "That was a nice story!"])},
                         {"role": "assistant", "content": choice(rng, ["I am glad you liked it!",
                                                                        "Thank you! I can tell you another one."])}]
    else:
        for _ in range(rng.randrange(1, 4)):
            q, ans = _fact(rng)
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": ans}]
    return msgs


if __name__ == "__main__":  # pragma: no cover
    import sys

    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    rng = random.Random(seed)
    for _ in range(3):
        print(story(rng))
        print("-" * 60)
    print(dialogue(rng))
