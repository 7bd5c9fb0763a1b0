"""Loaders: dense ids by first appearance, dtypes, side information, real datasets."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.data.errors import DataFileNotFoundError
from fedrec.data.item_features import ItemFeatures
from fedrec.data.loaders import LOADERS, load_interactions
from fedrec.data.schema import NO_TIMESTAMP

U_ITEM_ROW = "{id}|{title}|01-Jan-1995||http://x" + "|{flags}"


def _u_item(movie_id: int, title: str, genres: list[int]) -> str:
    flags = "|".join("1" if g in genres else "0" for g in range(19))
    return U_ITEM_ROW.format(id=movie_id, title=title, flags=flags) + "\n"


def test_registry_holds_all_datasets():
    # Assert
    assert set(LOADERS) == {"ml-100k", "ml-1m", "ml-latest-small", "lastfm", "synthetic"}


def test_ml_100k_dense_ids_follow_first_appearance_and_keep_file_order(write, tmp_path):
    # Prepare
    write("ml-100k/u.data", "7\t30\t4\t300\n5\t10\t3\t100\n7\t10\t5\t200\n5\t20\t1\t50\n")
    u_item = _u_item(10, "Ten (1990)", [8]) + _u_item(20, "Twenty", [1, 2])
    write("ml-100k/u.item", u_item + _u_item(30, "Caf\xe9 (1995)", [0]))

    # Execute
    inter = load_interactions("ml-100k", tmp_path)

    # Assert
    df = inter.df
    assert list(df.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert [str(t) for t in df.dtypes] == ["int64", "int64", "float32", "int64"]
    assert df["user_id"].tolist() == [0, 1, 0, 1]
    assert df["item_id"].tolist() == [0, 1, 1, 2]
    assert df["rating"].tolist() == [4.0, 3.0, 5.0, 1.0]
    assert df["timestamp"].tolist() == [300, 100, 200, 50]
    assert inter.raw_user_ids.tolist() == [7, 5] and inter.raw_item_ids.tolist() == [30, 10, 20]
    assert inter.has_timestamps and inter.name == "ml-100k"
    side = inter.item_side
    assert isinstance(side, ItemFeatures)
    genres = side.genres
    assert genres.dtype == np.float32 and genres.shape == (3, 19)
    assert side.genre_names[0] == "unknown" and len(side.genre_names) == 19
    assert np.flatnonzero(genres[0]).tolist() == [0]
    assert np.flatnonzero(genres[2]).tolist() == [1, 2]
    assert side.titles == ["Caf\xe9 (1995)", "Ten (1990)", "Twenty"]
    assert side.year.dtype == np.float32 and side.year.tolist() == [1995.0] * 3  # release date
    assert side.available() == ["title", "genres", "year"]


def test_ml_1m_without_timestamps_uses_no_timestamp(write, tmp_path):
    # Prepare
    write("ml-1m/ratings_uir_ordered.dat", "1::1193::5\n1::661::3\n2::1193::4\n")
    write("ml-1m/movies.dat", "661::James (1996)::Animation|Children's\n1193::Cuckoo::Drama\n")

    # Execute
    inter = load_interactions("ml-1m", tmp_path)

    # Assert
    assert not inter.has_timestamps
    assert (inter.df["timestamp"] == NO_TIMESTAMP).all()
    assert inter.df["item_id"].tolist() == [0, 1, 0]
    assert inter.item_side.titles == ["Cuckoo", "James (1996)"]
    assert inter.item_side.genres.shape == (2, 18)
    assert inter.item_side.genres[1].sum() == 2
    assert np.isnan(inter.item_side.year[0]) and inter.item_side.year[1] == 1996


def test_ml_1m_prefers_ratings_dat_with_timestamps(write, tmp_path):
    # Prepare
    write("ml-1m/ratings_uir_ordered.dat", "1::1::5\n")
    write("ml-1m/ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")

    # Execute
    inter = load_interactions("ml-1m", tmp_path)

    # Assert
    assert inter.has_timestamps and inter.item_side.available() == []
    assert inter.df["timestamp"].tolist() == [978300760, 978302109]


def test_ml_latest_small_with_quoted_titles(write, tmp_path):
    # Prepare
    write(
        "ml-latest-small/ratings.csv",
        "userId,movieId,rating,timestamp\r\n1,3,0.5,9\r\n2,1,4.5,8\r\n",
    )
    movies = 'movieId,title,genres\r\n1,"Toy, Story (1995)",Animation|Children\r\n'
    write("ml-latest-small/movies.csv", movies + "3,Other,(no genres listed)\r\n")

    # Execute
    inter = load_interactions("ml-latest-small", tmp_path)

    # Assert
    assert inter.df["rating"].tolist() == [0.5, 4.5]
    side = inter.item_side
    assert side.titles == ["Other", "Toy, Story (1995)"]
    assert side.genres[0].sum() == 0 and side.genres[1].sum() == 2
    assert np.isnan(side.year[0]) and side.year[1] == 1995


def test_side_info_can_be_skipped_and_missing_items_get_empty_rows(write, tmp_path):
    # Prepare
    write("ml-100k/u.data", "1\t10\t4\t1\n1\t99\t4\t2\n")
    write("ml-100k/u.item", _u_item(10, "Ten", [3]))

    # Execute
    without = load_interactions("ml-100k", tmp_path, side_info=False)
    partial = load_interactions("ml-100k", tmp_path)

    # Assert
    assert without.item_side.available() == []
    assert partial.item_side.titles == ["Ten", ""]
    assert partial.item_side.genres[1].sum() == 0
    assert partial.item_side.year[0] == 1995 and np.isnan(partial.item_side.year[1])


def test_lastfm_reads_listening_counts_kg_and_artist_names(write, tmp_path):
    # Prepare
    write(
        "lastfm-kgcn/user_artists.dat",
        "userID\tartistID\tweight\n2\t51\t13883\n2\t7\t5\n9\t51\t1\n",
    )
    write("lastfm-kgcn/kg.txt", "0\tmusic.artist.genre\t2\r\n1\tmusic.artist.origin\t3\r\n")
    write("lastfm-kgcn/item_index2entity_id.txt", "51\t0\r\n99\t1\r\n")
    artists = "id\tname\turl\tpictureURL\n7\tAir\thttp://a\thttp://b\n"
    write("lastfm-hetrec2011/artists.dat", (artists + "51\tDuran Duran\thttp://c\t\n").encode())

    # Execute
    inter = load_interactions("lastfm", tmp_path)

    # Assert
    assert inter.name == "lastfm" and not inter.has_timestamps
    assert (inter.df["timestamp"] == NO_TIMESTAMP).all()
    assert inter.df["rating"].tolist() == [13883.0, 5.0, 1.0]
    assert inter.raw_item_ids.tolist() == [51, 7]
    side = inter.item_side
    assert side.available() == ["title", "kg"]
    assert side.titles == ["Duran Duran", "Air"]
    assert side.kg.item_entity.tolist() == [0, -1]
    assert side.kg.relations == ("music.artist.genre", "music.artist.origin")
    assert side.kg.n_entities == 4


def test_lastfm_without_side_files_has_no_features(write, tmp_path):
    # Prepare
    write("lastfm-kgcn/user_artists.dat", "userID\tartistID\tweight\r\n2\t51\t3\r\n")

    # Execute
    inter = load_interactions("lastfm", tmp_path)

    # Assert
    assert inter.n_items == 1 and inter.item_side.available() == []


def test_missing_lastfm_points_to_the_kgcn_repository(tmp_path):
    # Execute
    with pytest.raises(DataFileNotFoundError) as info:
        load_interactions("lastfm", tmp_path)

    # Assert
    message = str(info.value)
    assert "lastfm-kgcn/user_artists.dat" in message
    assert "hwwang55/KGCN" in message and "data/music/" in message


def test_ml_1m_attaches_the_mkr_kg_when_both_files_exist(write, tmp_path):
    # Prepare
    write("ml-1m/ratings_uir_ordered.dat", "1::1193::5\n1::661::3\n2::1193::4\n")
    write("kg-movie-mkr/kg.txt", "0\tfilm.film.writer\t5\r\n1\tfilm.film.genre\t5\r\n")
    write("kg-movie-mkr/item_index2entity_id.txt", "661\t0\r\n1193\t1\r\n")

    # Execute
    inter = load_interactions("ml-1m", tmp_path)

    # Assert
    kg = inter.item_side.kg
    assert kg.item_entity.tolist() == [1, 0]
    assert kg.n_entities == 6 and kg.n_relations == 2
    assert kg.source == str(tmp_path / "kg-movie-mkr" / "kg.txt")


def test_synthetic_is_reachable_through_the_registry():
    # Execute
    inter = load_interactions("synthetic", n_users=50, n_items=40, seed=3)

    # Assert
    assert inter.name == "synthetic" and inter.n_users == 50 and inter.n_items == 40


# ----------------------------------------------------------------- real data (FEDREC_DATA_DIR)


def test_real_ml_100k(real_data):
    # Prepare
    root = real_data("ml-100k/u.data", "ml-100k/u.item")

    # Execute
    inter = load_interactions("ml-100k", root)

    # Assert
    assert (len(inter.df), inter.n_users, inter.n_items) == (100_000, 943, 1_682)
    assert inter.has_timestamps
    side = inter.item_side
    assert side.genres.shape == (1_682, 19)
    toy_story = int(np.flatnonzero(inter.raw_item_ids == 1)[0])
    assert side.titles[toy_story] == "Toy Story (1995)"
    assert side.year[toy_story] == 1995
    assert int(np.isnan(side.year).sum()) == 1  # movie 267 "unknown" has no date nor year


def test_real_ml_1m(real_data):
    # Prepare
    root = real_data("ml-1m/movies.dat")
    if not any(
        (root / f).is_file() for f in ("ml-1m/ratings.dat", "ml-1m/ratings_uir_ordered.dat")
    ):
        pytest.skip("no ML-1M ratings file")

    # Execute
    inter = load_interactions("ml-1m", root)

    # Assert
    assert (len(inter.df), inter.n_users, inter.n_items) == (1_000_209, 6_040, 3_706)
    assert np.array_equal(inter.raw_user_ids, np.arange(1, 6_041))
    assert inter.raw_item_ids[0] == 1193  # first line 1::1193::5::978300760
    side = inter.item_side
    assert side.genres.shape == (3_706, 18)
    assert len(side.titles) == 3_706
    assert not np.isnan(side.year).any() and side.year.min() >= 1919


def test_real_ml_latest_small(real_data):
    # Prepare
    root = real_data("ml-latest-small/ratings.csv", "ml-latest-small/movies.csv")

    # Execute
    inter = load_interactions("ml-latest-small", root)

    # Assert
    assert (len(inter.df), inter.n_users, inter.n_items) == (100_836, 610, 9_724)
    assert set(np.unique(inter.df["rating"])) <= {x / 2 for x in range(1, 11)}
    assert all(inter.item_side.titles)
    # 13 titles end without "(year)"; one of them ends with the range "(2006–2007)"
    assert int(np.isnan(inter.item_side.year).sum()) == 12


def test_real_lastfm(real_data):
    # Prepare
    root = real_data(
        "lastfm-kgcn/user_artists.dat", "lastfm-kgcn/kg.txt", "lastfm-kgcn/item_index2entity_id.txt"
    )

    # Execute
    inter = load_interactions("lastfm", root)

    # Assert
    assert (len(inter.df), inter.n_users, inter.n_items) == (92_834, 1_892, 17_632)
    assert not inter.has_timestamps and inter.df["rating"].min() >= 1
    kg = inter.item_side.kg
    assert (len(kg.triples), kg.n_entities, kg.n_relations) == (15_518, 9_366, 60)
    assert int((kg.item_entity >= 0).sum()) == 3_846  # KGCN's Last.FM items
    if (root / "lastfm-hetrec2011/artists.dat").is_file():
        assert len(inter.item_side.titles) == 17_632 and all(inter.item_side.titles)
