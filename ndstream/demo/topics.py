"""A small, offline, labelled text set: 320 hand-written English sentences on four topics.

It is the example input for the sentence-transformer (MiniLM) demo, which groups activations
by topic. The sentences ship inside the package as literal strings, so nothing is downloaded
and the set is identical on every machine. Each topic has 80 sentences of deliberately mixed
length (roughly a third of 3-7 words, a third of 8-15 and a third of 16-35), so that padding
matters when they are tokenized and batched. Items interleave the topics, so every prefix of
the dataset is balanced.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["CLASSES", "TopicSentences", "topic_sentences"]

#: The topic names; an item's label is the index into this tuple.
CLASSES: tuple[str, ...] = ("sports", "weather", "cooking", "computing")

_SPORTS: tuple[str, ...] = (
    "The striker scored twice tonight.",
    "Our basketball team practices free throws every morning before school starts.",
    "After ninety minutes of tense football, the match went to a penalty shootout, and the home goalkeeper saved the final kick to win the cup.",
    "She won the marathon easily.",
    "The referee showed a red card after a dangerous tackle.",
    "The tennis final lasted nearly five hours, with both players trading breaks of serve until the champion finally sealed it in a fifth set tiebreak.",
    "Baseball season opens next week.",
    "He swam the hundred meter freestyle in under fifty seconds.",
    "Our coach made us run laps around the track whenever we missed a practice, which is probably why the whole team was so fit by the playoffs.",
    "The goalkeeper punched the ball clear.",
    "The cyclists attacked on the final mountain climb of the stage.",
    "When the quarterback threw a long pass in the last seconds, the receiver caught it in the end zone and the stadium erupted with noise.",
    "Golf requires patience and focus.",
    "The boxer landed a clean uppercut in the third round.",
    "Fans queued outside the arena for hours to buy tickets for the derby, hoping to see their team finally beat its fiercest local rival.",
    "The relay team dropped the baton.",
    "Volleyball players need quick reflexes to dig a hard spike.",
    "The young gymnast stuck her landing on the balance beam, earning the highest score of the night and a place on the national Olympic squad.",
    "Hockey players skate incredibly fast.",
    "The batter hit a home run over the left field wall.",
    "Rugby is a demanding contact sport, and players spend many hours in the gym building the strength they need to survive scrums and tackles.",
    "The umpire called him out.",
    "Our club finished second in the league after a strong season.",
    "Although the sprinter stumbled slightly out of the blocks, she recovered quickly and crossed the finish line a fraction ahead of the defending world champion.",
    "The fans chanted loudly.",
    "The tennis player served an ace to win the first set.",
    "Every Sunday morning a group of friends meets at the park to play a friendly game of soccer, no matter how cold or muddy the pitch gets.",
    "He skied down the slalom course.",
    "The point guard dribbled past two defenders and scored a layup.",
    "The team manager was fired after a run of eight straight defeats left the club at the bottom of the table and facing relegation.",
    "The pitcher threw a curveball.",
    "Swimmers must touch the wall with both hands in breaststroke.",
    "During the last lap of the grand prix, the two leading drivers went side by side into the final corner, and the crowd held its breath.",
    "We lost the match on penalties.",
    "The golfer sank a long putt to win the tournament.",
    "Cricket matches can last five full days, and the test series between the two nations is one of the oldest rivalries in international sport.",
    "The wrestler pinned his opponent.",
    "She holds the national record in the long jump.",
    "Before the championship game, the players gathered in the locker room, listened quietly to their captain, and then ran out onto the court to a standing ovation.",
    "The goal was ruled offside.",
    "Our hockey team won the tournament in overtime last night.",
    "Marathon runners often train for months, gradually increasing their weekly mileage so their bodies can cope with running more than forty kilometers on race day.",
    "The coach called a timeout.",
    "The rowing crew pulled hard to overtake their rivals near the finish.",
    "The stadium was completely sold out for the final, and thousands more supporters watched the game on big screens set up in the city square.",
    "He dunked the basketball effortlessly.",
    "The linebacker sacked the quarterback on third down.",
    "In table tennis, the ball moves so quickly that players must read the spin from their opponent's paddle before it even crosses the net.",
    "The midfielder passed beautifully.",
    "A yellow card was shown for time wasting.",
    "After tearing a knee ligament last season, the veteran defender spent nine months in rehabilitation before finally returning to the starting lineup this weekend.",
    "The swimmer won gold.",
    "The home team scored a late equalizer in stoppage time.",
    "The figure skater opened her free program with a triple axel, landed every jump cleanly, and finished with a spin that brought the judges to their feet.",
    "They practice volleyball on the beach.",
    "The fielder dived to catch the ball near the boundary.",
    "Our softball league is open to players of every skill level, and most teams care more about the barbecue after the game than the final score.",
    "The cyclist wore the yellow jersey.",
    "The champion defended his heavyweight title with a knockout.",
    "Scouts from several professional clubs attended the youth tournament, taking notes on the fastest and most skillful players in hopes of signing the next big star.",
    "Darts requires a steady hand.",
    "The archer hit the center of the target three times.",
    "The badminton doubles pair communicated perfectly throughout the match, covering the court so well that their opponents struggled to find any open space for a winner.",
    "Our team needs a new striker.",
    "The hurdler clipped the final barrier but still won the race.",
    "Season ticket holders were furious when the club announced that prices would rise again, despite the team losing more than half of its home matches.",
    "The pole vaulter cleared six meters.",
    "The water polo team trains in the pool five days a week.",
    "When the first baseman stretched to catch the throw just before the runner reached the bag, the umpire signaled out and the inning was over.",
    "The crowd booed the referee.",
    "Both teams wore black armbands before kickoff to honor a former player.",
    "Winning the league title on the final day of the season, after trailing their rivals for months, was the greatest moment in the club's long history.",
    "She trains for the triathlon.",
    "The fencer scored the winning touch with a quick lunge.",
    "Many amateur golfers spend hours at the driving range working on their swing, but the best way to lower a handicap is usually to practice putting.",
    "The shortstop turned a double play.",
    "The snowboarder landed a difficult trick in the halfpipe final.",
    "Even though it was only a preseason friendly, the young winger played with such energy and confidence that the coach promised him a starting spot.",
    "Kickoff is at three o'clock.",
    "The sailing crew won the regatta by a single boat length.",
)

_WEATHER: tuple[str, ...] = (
    "It rained all afternoon.",
    "The forecast says strong winds will arrive by tomorrow evening.",
    "A cold front moving in from the north will bring heavy showers and thunderstorms tonight, followed by clearer skies and much cooler temperatures by the weekend.",
    "Thick fog covered the valley.",
    "Temperatures dropped below freezing overnight and the roads became icy.",
    "The hurricane strengthened over warm ocean water and is expected to make landfall early Thursday, so coastal residents have been told to evacuate immediately.",
    "Snow is falling heavily now.",
    "A heat wave will keep temperatures above forty degrees this week.",
    "After weeks without a single drop of rain, the farmers were relieved when dark clouds finally rolled in and a steady drizzle soaked their dry fields.",
    "The sky is clear tonight.",
    "Humidity levels remain high, making the afternoon feel muggy and uncomfortable.",
    "Meteorologists warned that a slow moving storm system could dump up to twenty centimeters of rain on the region, raising the risk of flash floods in low areas.",
    "Hailstones dented several parked cars.",
    "Expect scattered showers in the morning and sunshine by noon.",
    "The morning started bright and sunny, but by lunchtime a sudden gust of wind brought towering clouds, rumbles of thunder, and a brief downpour across the city.",
    "A rainbow appeared after the storm.",
    "The barometric pressure is falling, which usually signals stormy weather ahead.",
    "Winter storm warnings have been issued for the mountains, where blizzard conditions with blowing snow and near zero visibility are expected through Monday night.",
    "Lightning struck the old oak.",
    "A gentle breeze kept the summer evening pleasantly cool.",
    "Spring weather in this region is notoriously unpredictable, so locals often carry an umbrella and sunglasses at the same time just to be prepared for anything.",
    "Tomorrow will be mostly cloudy.",
    "Frost formed on the windshield during the cold clear night.",
    "The weather service confirmed that a small tornado touched down just outside town yesterday afternoon, tearing roofs off several barns before quickly losing strength.",
    "The drizzle finally stopped.",
    "Monsoon rains flooded the streets and delayed trains across the region.",
    "Because warm moist air from the gulf will collide with a cooler air mass, forecasters expect severe thunderstorms with large hail and damaging winds late tonight.",
    "Sleet is expected this evening.",
    "The UV index will be very high, so wear sunscreen.",
    "Fog is likely to linger along the coast until mid morning, so drivers should slow down, use their low beams, and leave extra distance between vehicles.",
    "A chilly wind blew outside.",
    "The weekend looks dry with plenty of sunshine and light winds.",
    "This winter has been the warmest on record so far, with hardly any snow in the lowlands and temperatures regularly climbing well above the seasonal average.",
    "Thunder rumbled in the distance.",
    "Overnight lows will hover around zero with patchy frost inland.",
    "When the storm passed, the air smelled fresh and clean, puddles reflected the blue sky, and the temperature dropped by nearly ten degrees in an hour.",
    "The snowstorm closed all schools.",
    "A dust storm reduced visibility to a few meters on the highway.",
    "Satellite images show a large band of clouds stretching across the ocean, and forecasters believe it will reach the western coast by late Tuesday evening.",
    "Sunny skies are forecast today.",
    "Freezing rain coated the power lines with a thick layer of ice.",
    "Although the morning forecast promised sunshine all day, a band of low gray clouds drifted in from the sea and kept the beach cold and overcast until sunset.",
    "The wind chill feels brutal.",
    "Heavy snowfall is expected in the mountains above one thousand meters.",
    "During the dry season the air is so still and hot that even a light afternoon breeze feels like a gift, and everyone waits eagerly for the first rains.",
    "Clouds are gathering overhead.",
    "The typhoon brought torrential rain and winds over one hundred kilometers per hour.",
    "Residents along the river were told to prepare sandbags because the melting snow combined with several days of steady rain could push water levels above the flood banks.",
    "It was humid and sticky.",
    "A light dusting of snow covered the hills this morning.",
    "The old farmer claimed he could predict the weather by watching the clouds and the birds, and to be fair, he was right about tomorrow's rain more often than the radio.",
    "Expect gusty winds this afternoon.",
    "Record high temperatures were measured in several cities on Saturday.",
    "A high pressure system parked over the region will keep skies clear and winds calm for the next several days, although nights will turn quite cold.",
    "Black ice made driving dangerous.",
    "Scattered thunderstorms could develop over the hills later today.",
    "Weather balloons are launched twice a day from stations around the world to measure temperature, humidity, and wind speed high up in the atmosphere.",
    "The heat was unbearable yesterday.",
    "A blanket of low clouds kept the city gray all day.",
    "Even though the calendar says it is summer, this week will feel more like autumn, with daytime highs barely reaching fifteen degrees and frequent showers.",
    "Morning mist rose from the lake.",
    "Strong gusts knocked down trees and left thousands without power.",
    "The snow started as a few lazy flakes around midnight, but by morning more than half a meter had fallen and the whole town was buried under white drifts.",
    "The breeze smells like rain.",
    "Autumn brings cooler nights, shorter days, and frequent foggy mornings.",
    "Forecasters say there is a seventy percent chance of rain on Saturday, so the organizers of the outdoor festival are setting up large tents just in case.",
    "A blizzard hit the plains.",
    "The storm surge pushed seawater several hundred meters inland.",
    "Climate scientists point out that a single cold snap says little about long term trends, which can only be understood by studying decades of temperature records.",
    "The puddles froze overnight.",
    "Dry air and strong winds raised the risk of wildfires.",
    "The pilot announced that turbulence was expected for the next twenty minutes because the plane was flying through a line of towering thunderstorm clouds.",
    "Rain is forecast for Friday.",
    "The temperature rose sharply once the morning fog burned off.",
    "By late afternoon the sky had turned an eerie shade of green, the wind suddenly died, and the sirens began warning everyone to take shelter from the approaching storm.",
    "Drought has dried up the reservoir.",
    "A warm southerly wind quickly melted most of the snow.",
    "The weather app predicted light showers, but what actually arrived was a violent hailstorm that shredded garden plants and left a layer of ice pellets on every lawn.",
    "Gray skies again today.",
    "Tonight will be clear, calm, and very cold under the stars.",
)

_COOKING: tuple[str, ...] = (
    "Chop the onions finely.",
    "Simmer the tomato sauce gently for at least twenty minutes.",
    "To make a good risotto, add the warm stock one ladle at a time and keep stirring until the rice is creamy but still slightly firm in the center.",
    "Preheat the oven to 200 degrees.",
    "Whisk the eggs and sugar until pale and fluffy.",
    "My grandmother always kneaded the bread dough by hand for ten minutes, then left it covered in a warm corner of the kitchen until it doubled in size.",
    "Season the soup with salt.",
    "Sear the steak in a very hot cast iron pan.",
    "When frying garlic, keep the heat low and watch it closely, because it turns from golden to burnt and bitter in just a few seconds.",
    "Melt the butter slowly.",
    "Fold the whipped cream gently into the chocolate mixture.",
    "The secret to crispy roast potatoes is to parboil them first, shake them in the pot to rough up the edges, and then roast them in hot oil.",
    "Stir the batter until smooth.",
    "Let the roast rest for ten minutes before carving it.",
    "Before you start cooking, read the whole recipe, measure out every ingredient, and arrange them near the stove so nothing burns while you search the cupboard.",
    "The pasta needs more salt.",
    "Marinate the chicken overnight in yogurt, garlic, and spices.",
    "A classic French omelette should be cooked quickly over medium heat, stirred constantly with a fork, and rolled onto the plate while the center is still soft.",
    "Grate some fresh parmesan cheese.",
    "Bake the cookies until the edges are lightly golden brown.",
    "If your caramel starts to crystallize, add a splash of water, lower the heat, and swirl the pan gently instead of stirring it with a spoon.",
    "Peel and dice the carrots.",
    "Toast the spices in a dry pan to release their aroma.",
    "We spent the whole afternoon making fresh pasta, rolling the dough into thin sheets and cutting it into ribbons that we hung to dry over the backs of chairs.",
    "Bring the water to a boil.",
    "Deglaze the pan with a splash of white wine.",
    "A good chef's knife is the most important tool in any kitchen, and keeping it sharp makes slicing vegetables safer, faster, and far more enjoyable.",
    "Knead the dough for ten minutes.",
    "Add a pinch of sugar to balance the acidity of tomatoes.",
    "For the curry, fry the onions until deep brown, add ginger, garlic, and ground spices, then pour in coconut milk and simmer until the chicken is tender.",
    "Grill the fish skin side down.",
    "Blanch the green beans and then plunge them into ice water.",
    "The soup tasted flat until I added a squeeze of lemon juice and a handful of chopped herbs, which instantly made all the flavors brighter and fresher.",
    "Slice the bread thinly.",
    "The recipe calls for two cups of flour and one egg.",
    "When baking a cake, make sure the butter and eggs are at room temperature, because cold ingredients do not blend smoothly and the batter may curdle.",
    "Roast the vegetables until caramelized.",
    "Cover the pot and let the rice steam for fifteen minutes.",
    "Slow cooking a tough cut of beef for several hours in red wine and stock breaks down the connective tissue and turns it meltingly tender.",
    "Taste the sauce before serving.",
    "Brush the pie crust with beaten egg for a glossy finish.",
    "Fresh herbs like basil and parsley should be added at the very end of cooking, while hardy herbs such as rosemary and thyme can simmer much longer.",
    "Whisk the vinaigrette thoroughly.",
    "Fry the bacon until crisp, then drain it on paper towels.",
    "My first attempt at making bread was a disaster because I killed the yeast with water that was too hot, and the loaf came out flat and dense as a brick.",
    "Sprinkle cinnamon over the oatmeal.",
    "Poach the eggs in barely simmering water with a little vinegar.",
    "To keep guacamole from turning brown, press plastic wrap directly onto its surface and add plenty of lime juice before storing it in the fridge.",
    "The cake is still raw.",
    "Sift the flour and baking powder together into a large bowl.",
    "On Sunday mornings my father makes a huge stack of buttermilk pancakes, flipping each one as soon as bubbles appear and the edges begin to look dry.",
    "Stuff the peppers with rice.",
    "Reduce the stock until it thickens into a rich glaze.",
    "Stir fries cook in just a few minutes over very high heat, so cut all the meat and vegetables into small, even pieces before you turn on the wok.",
    "Drizzle olive oil over the salad.",
    "Chill the cookie dough for an hour before baking it.",
    "The restaurant's head chef tastes every sauce before it leaves the kitchen, adjusting the seasoning with salt, acid, or a little butter until the balance is perfect.",
    "Steam the broccoli for three minutes.",
    "Use a meat thermometer to check that the turkey is cooked through.",
    "Homemade chicken stock takes hours to simmer, but it is easy to make from leftover bones, onions, carrots, and celery, and it freezes very well for later.",
    "Crack three eggs into a bowl.",
    "Squeeze the lime over the tacos just before serving them.",
    "When making pizza at home, stretch the dough by hand rather than with a rolling pin, and bake it on a preheated stone at the highest temperature your oven allows.",
    "Mince two cloves of garlic.",
    "Braise the lamb shanks slowly with rosemary and red wine.",
    "Cooking dried beans from scratch takes planning, since they usually need to soak overnight and then simmer gently for an hour or more until they become soft.",
    "Flip the burger only once.",
    "Line the baking tray with parchment paper to prevent sticking.",
    "I always double the amount of garlic in any recipe, partly because I love the flavor and partly because most cookbooks seem far too timid with it.",
    "Zest the lemon before juicing.",
    "The dumplings are pleated by hand and steamed in bamboo baskets.",
    "A well stocked pantry with rice, pasta, canned tomatoes, beans, and a few good spices means you can cook a tasty dinner even when the fridge is nearly empty.",
    "Dust the counter with flour.",
    "Simmer the lentils with cumin until they turn soft and creamy.",
    "Tempering chocolate involves melting it, cooling it to a precise temperature, and gently warming it again so that it sets with a glossy shine and a clean snap.",
    "Skim the fat from the broth.",
    "Roll the sushi tightly using a bamboo mat and wet hands.",
    "The chef showed us how to fillet a whole salmon, running the knife along the backbone in one smooth motion and removing the pin bones with tweezers.",
    "Garnish with chopped fresh parsley.",
    "Scrape down the sides of the mixing bowl between additions.",
)

_COMPUTING: tuple[str, ...] = (
    "The laptop will not boot.",
    "Restart your computer after the operating system update finishes installing.",
    "The new processor has sixteen cores and a much larger cache, so compiling the entire project now takes about three minutes instead of nearly ten.",
    "Save your work frequently.",
    "The server crashed because its hard drive ran out of space.",
    "Before deploying the web application to production, the team runs the full test suite, checks the database migrations, and reviews every change in the pull request.",
    "The program has a bug.",
    "Python is a popular programming language for data analysis.",
    "When the memory leak finally appeared in the logs, the developer spent two days tracing it to a cache that stored every request but never evicted anything.",
    "Update your graphics card drivers.",
    "The database query took several seconds because the table lacked an index.",
    "Cloud providers let companies rent computing power by the hour, which means a startup can run huge workloads without buying and maintaining its own data center.",
    "Compile the code before running.",
    "My keyboard stopped working after I spilled coffee on it.",
    "The operating system schedules processes across all available processor cores, switching between them so quickly that many programs appear to run at the same time.",
    "Reboot the router, please.",
    "Encryption protects sensitive data as it travels across the network.",
    "Our nightly backup script copies every file from the main server to an external drive and then uploads a compressed archive to a remote storage bucket.",
    "The website is loading slowly.",
    "Version control lets developers track every change to the source code.",
    "After upgrading to a solid state drive, my old laptop started up in seconds, and opening large spreadsheets no longer made the fan spin loudly for minutes.",
    "Clear your browser cache.",
    "The compiler reported a syntax error on line forty two.",
    "Machine learning models are trained on graphics cards because these chips can perform thousands of matrix multiplications in parallel much faster than an ordinary processor.",
    "Install the latest security patch.",
    "A strong password should mix letters, numbers, and special symbols.",
    "The junior developer accidentally deleted the production database, but luckily the operations team had a recent backup and restored everything in under an hour.",
    "The mouse cursor keeps freezing.",
    "This function recursively walks the directory tree and lists every file.",
    "Unit tests check small pieces of code in isolation, while integration tests make sure that the different modules of a program actually work correctly together.",
    "My computer needs more memory.",
    "The spreadsheet software crashed and I lost an hour of work.",
    "A phishing email tricked several employees into typing their passwords on a fake login page, so the company now requires two factor authentication for every account.",
    "The printer is offline again.",
    "Linux runs on most of the servers that power the internet.",
    "When a program reads data from memory that it has already freed, the behavior is undefined, and the resulting crashes can be extremely difficult to reproduce.",
    "Download the installer from GitHub.",
    "The monitor flickers whenever the graphics card gets too hot.",
    "The first computers filled entire rooms and used thousands of vacuum tubes, yet a modern smartphone is millions of times more powerful and fits in a pocket.",
    "The disk is almost full.",
    "Open a terminal and type the command to list files.",
    "Our continuous integration pipeline builds the code on three operating systems, runs linting and type checks, and blocks any merge if a single test fails.",
    "Ransomware encrypted the company's files.",
    "The app uses a REST API to fetch data from the server.",
    "Because the function was called millions of times inside a tight loop, rewriting it to avoid allocating a new list on each call made the whole program twice as fast.",
    "Plug in the USB cable.",
    "Virtual machines let you run several operating systems on one computer.",
    "The hard drive made a strange clicking noise for days before it died completely, and I lost every photo that I had not copied to the cloud.",
    "The script threw an exception.",
    "A firewall blocks unwanted traffic from reaching your home network.",
    "Modern web browsers run JavaScript in a sandbox, which limits what a malicious page can do to the files and programs on your computer.",
    "Refactor this messy function.",
    "The kernel allocates memory pages to each running process.",
    "The programmer added detailed comments and clear variable names so that anyone reading the code later could understand how the sorting algorithm worked.",
    "Wifi keeps dropping at home.",
    "Pixels on the screen are drawn by the graphics processor.",
    "When you type a web address, your computer first asks a domain name server for the matching IP address, then opens a connection to that machine to request the page.",
    "Merge the branch into main.",
    "The laptop battery drains quickly when many browser tabs are open.",
    "Open source software is written by volunteers and companies around the world, who share their code freely so that anyone can read, modify, and improve it.",
    "Run the antivirus scan tonight.",
    "Binary search finds an item in a sorted list very quickly.",
    "The tech support agent asked me to turn the computer off and on again, and to my embarrassment that simple step fixed the problem immediately.",
    "The cloud server is down.",
    "Each byte of memory holds eight bits of binary data.",
    "Large software projects are split into many small modules with clear interfaces, so that different teams can work on separate parts without constantly breaking each other's code.",
    "Enable dark mode in settings.",
    "The hackers exploited an unpatched vulnerability in the web server.",
    "Our office replaced its aging desktop computers with lightweight laptops, and the IT department spent a week installing software and migrating everyone's files and settings.",
    "Debug the failing unit test.",
    "The new graphics card renders games smoothly at high resolution.",
    "Compilers translate human readable source code into machine instructions, performing many clever optimizations along the way so the final program runs as efficiently as possible.",
    "Type your password to log in.",
    "Docker containers package an application together with all of its dependencies.",
    "The database administrator noticed that the same slow query ran thousands of times every minute, so she added a cache layer that cut server load in half.",
    "The screen went completely black.",
    "Quantum computers use qubits instead of ordinary bits to perform calculations.",
    "Every time I install a new program, it asks for permission to access my contacts, camera, and location, which makes me wonder what it really does with my data.",
    "Back up your files weekly.",
    "The operating system assigns a unique identifier to every running process.",
)

_SENTENCES: dict[str, tuple[str, ...]] = {
    "sports": _SPORTS,
    "weather": _WEATHER,
    "cooking": _COOKING,
    "computing": _COMPUTING,
}


def _validate(topics: Sequence[str] | None) -> tuple[str, ...]:
    """Return the selected topics in :data:`CLASSES` order, or raise on a bad selection."""
    if topics is None:
        return CLASSES
    chosen = (topics,) if isinstance(topics, str) else tuple(topics)
    valid = ", ".join(map(repr, CLASSES))
    unknown = [t for t in chosen if t not in CLASSES]
    if unknown:
        raise ValueError(
            f"unknown topic(s) {', '.join(map(repr, unknown))}; valid topics are {valid}"
        )
    if not chosen:
        raise ValueError(f"topics must name at least one topic; valid topics are {valid}")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"topics must not repeat a topic; got {list(chosen)!r}")
    return tuple(t for t in CLASSES if t in chosen)


class TopicSentences(torch.utils.data.Dataset[dict[str, object]]):
    """Hand-written English sentences on four topics, 80 per topic, fully offline.

    Items interleave the selected topics (sentence 0 of each topic, then sentence 1 of each,
    and so on), so any prefix of the dataset is balanced across topics. Sentence lengths are
    deliberately mixed, so padding matters when items are tokenized and batched.

    Parameters
    ----------
    topics : sequence of str, optional
        The topics to include, each one of :data:`CLASSES` at most once; a single topic name
        may be given as a plain string. ``None`` (the default) selects all four. Selected
        topics are always interleaved in :data:`CLASSES` order, whatever the order given.

    Attributes
    ----------
    classes : tuple of str
        All four topic names, :data:`CLASSES`; a label is the index into this tuple, even
        when ``topics`` selects a subset.
    topics : tuple of str
        The selected topics, in :data:`CLASSES` order.
    texts : list of str
        The sentence of every item, in item order.
    targets : numpy.ndarray
        The ``int64`` label of every item, in item order.

    Raises
    ------
    ValueError
        If ``topics`` is empty, repeats a topic or names one that is not in :data:`CLASSES`.

    Examples
    --------
    >>> ds = TopicSentences(["weather", "sports"])
    >>> len(ds)
    160
    >>> [ds[i]["labels"] for i in range(4)]
    [0, 1, 0, 1]
    """

    classes: tuple[str, ...] = CLASSES

    def __init__(self, topics: Sequence[str] | None = None) -> None:
        self.topics: tuple[str, ...] = _validate(topics)
        pools = [_SENTENCES[t] for t in self.topics]
        labels = [CLASSES.index(t) for t in self.topics]
        self.texts: list[str] = []
        target_list: list[int] = []
        for row in zip(*pools, strict=True):
            self.texts.extend(row)
            target_list.extend(labels)
        self.targets: np.ndarray = np.asarray(target_list, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> dict[str, object]:
        return {"text": self.texts[index], "labels": int(self.targets[index])}


def topic_sentences(topics: Sequence[str] | None = None) -> TopicSentences:
    """Build the offline topic-sentence dataset.

    Parameters
    ----------
    topics : sequence of str, optional
        The topics to include, each one of :data:`CLASSES`; ``None`` (the default) selects
        all four.

    Returns
    -------
    TopicSentences
        A map-style dataset whose items are ``{"text": str, "labels": int}``, with topics
        interleaved so that any prefix is balanced.

    Raises
    ------
    ValueError
        If ``topics`` is empty, repeats a topic or names one that is not in :data:`CLASSES`.
    """
    return TopicSentences(topics)
