"""Place.label(): the short name shown in tables, maps and reports (no data needed)."""

from geoscope.geo.places import Place


def test_label_in_a_town_near_a_town_and_far_from_towns():
    fi = dict(country_code="FI", country="Finland", region="Pirkanmaa", region_code="FI-11")
    assert Place(**fi, town="Tampere", town_km=1.2).label() == "Tampere, Pirkanmaa, Finland"
    assert Place(**fi, town="Nokia", town_km=12.0).label() == "near Nokia, Pirkanmaa, Finland"
    assert Place(**fi, town="Nokia", town_km=400.0).label() == "Pirkanmaa, Finland"


def test_label_does_not_repeat_a_region_named_like_its_country():
    p = Place(country_code="GI", country="Gibraltar", region="Gibraltar", town="Sandpits", town_km=0.3)
    assert p.label() == "Sandpits, Gibraltar"


def test_label_at_sea_and_unknown():
    assert Place(at_sea=True, town="Lajes das Flores", town_km=1316.8).label() == \
        "at sea (nearest place Lajes das Flores, 1317 km)"
    assert Place(at_sea=True).label() == "at sea"
    assert Place().label() == "unknown"


def test_dict_round_trip():
    p = Place(country_code="FI", country="Finland", town="Tampere", town_km=1.0)
    assert Place.from_dict(p.to_dict()) == p and Place.from_dict(None) is None
