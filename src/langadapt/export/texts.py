"""Default verification text: short and long sentences in many scripts, used when the caller gives none.

Written for this project (not copied from any data set). Lengths range from two words to a paragraph, so a
batch mixes padding with texts cut at the verification length.
"""

from __future__ import annotations

__all__ = ["VERIFICATION_TEXTS"]

_LONG_EN = (
    "The regional health office said on Tuesday that the new clinic near the river market will open next month, "
    "after two years of delays caused by flooding, missing building materials and a dispute over the land, and "
    "that nurses from three neighbouring districts have already been trained to run the maternity ward, the "
    "pharmacy and a small laboratory that can test for malaria, cholera and tuberculosis without sending samples "
    "to the capital."
)
_LONG_SW = (
    "Wakulima wa kahawa katika milima ya kaskazini wamesema kwamba mvua za mwaka huu zilichelewa sana, na kwa "
    "sababu hiyo mavuno yatakuwa madogo kuliko miaka iliyopita, lakini bei ya soko la dunia imepanda, kwa hiyo "
    "wengi wao wanatumaini kwamba mapato yao hayatashuka sana ikiwa serikali itawasaidia kusafirisha mazao yao "
    "hadi bandarini kwa wakati."
)
_LONG_YO = (
    "Àwọn olùkọ́ ní ilé-ìwé girama tó wà ní àárín ìlú sọ pé àwọn akẹ́kọ̀ọ́ tó ń kọ́ èdè Yorùbá ti pọ̀ sí i láti "
    "ọdún tó kọjá, wọ́n sì ti bẹ̀rẹ̀ sí í kọ àwọn ìtàn àti orin ìbílẹ̀ sílẹ̀ kí àwọn ọmọ tí ń bọ̀ lẹ́yìn lè kà wọ́n, "
    "kí wọ́n sì mọ ìtàn àwọn baba ńlá wọn dáadáa."
)

VERIFICATION_TEXTS: tuple[str, ...] = (
    "Good morning.",
    "The match ended two to one after extra time.",
    "Prices of maize and beans rose again this week in the northern markets.",
    "The president met journalists in Abuja on Monday to discuss the new budget.",
    _LONG_EN,
    "Habari za asubuhi.",
    "Mtoto alienda shuleni Nairobi jana asubuhi na kurudi jioni.",
    "Rais wa Tanzania alizungumza na waandishi wa habari kuhusu uchaguzi ujao.",
    _LONG_SW,
    "Ẹ kú àárọ̀.",
    "Ọmọ náà lọ sí ilé ìwé ní Èkó lánàá.",
    "Adébáyọ̀ ń ṣiṣẹ́ ní ilé-iṣẹ́ ìjọba ní Abuja fún ọdún mẹ́wàá.",
    _LONG_YO,
    "Yaran sun tafi makaranta a Kano jiya.",
    "Shugaban kasa ya ziyarci Legas ranar Litinin domin tattauna batun tsaro.",
    "Nwa ahụ gara ụlọ akwụkwọ na Enugu ụnyaahụ.",
    "Umwana yagiye ku ishuri i Kigali ejo hashize.",
    "Abantwana badlala ibhola enkundleni ngemuva kwesikole.",
    "Ninyi mnakaribishwa sana kwenye sherehe ya harusi Jumamosi ijayo.",
    "Dunia imebadilika sana tangu simu za mkononi zilipoenea vijijini.",
    "ሰላም እንዴት ነህ ዛሬ ጥሩ ቀን ነው።",
    "የአዲስ አበባ ከተማ አስተዳደር አዲስ የአውቶቡስ መስመሮችን ከፈተ።",
    "नमस्ते, आप कैसे हैं? आज अच्छा दिन है।",
    "काठमाडौंमा आज बिहान हल्का वर्षा भयो र सडकहरू भिजेका थिए।",
    "今天天气很好，我们去公园散步。",
    "Budaya lokal di Bali tetap hidup meskipun jumlah wisatawan terus bertambah.",
    "Wong-wong padha nonton wayang kulit ing alun-alun nganti wengi.",
    "Il-gvern ħabbar baġit ġdid għall-edukazzjoni u s-saħħa.",
    "Ny mpianatra dia nianatra teny anglisy tany an-tsekoly.",
    "O le aso nei e matagofie tele le tau.",
    "Bonjour à tous, la réunion commence à neuf heures précises.",
    "La cosecha de café fue menor este año por la falta de lluvia.",
    "Доброе утро, сегодня на улице холодно и идёт снег.",
    "مرحبا، كيف حالك اليوم؟ الطقس جميل جدا.",
    "Hakuna matata.",
    "Ọjà Ọ̀yìngbò kún fún èrò ní ọjọ́ Àbámẹ́ta.",
    "Kampuni mpya ya simu imeajiri vijana mia tano katika mji wa Mwanza.",
    "Gwamnatin jihar ta kaddamar da shirin rigakafin cutar shan inna a kauyuka.",
    "Ndị ọrụ ugbo na-eche mmiri ozuzo ka ha kụọ ji na ọka.",
    "The new bridge will connect the two villages before the rainy season.",
)
