"""The data sets and loaders: the embedded digits, the synthetic sets, seeded splits, and the
loaders' conversions and error messages for a user's files."""

import numpy as np
import pytest

from symbackprop.data import (
    DataError,
    load_csv,
    load_digits,
    load_npy,
    load_npz,
    noisy_sine,
    train_test_split,
    two_spirals,
    xor,
)

# ---------------------------------------------------------------- the embedded digits


def test_digits_shapes_dtypes_and_ranges():
    (X_train, y_train), (X_test, y_test) = load_digits()
    assert X_train.shape == (1438, 64) and X_test.shape == (359, 64)
    assert X_train.dtype == np.float32 and y_train.dtype == np.int64
    assert X_train.min() == 0.0 and X_train.max() == 1.0
    assert set(np.unique(np.concatenate([y_train, y_test]))) == set(range(10))


def test_digits_unscaled_are_pixel_counts():
    X, _ = load_digits(scale=False).train
    assert X.dtype == np.float32 and X.max() == 16.0
    assert np.array_equal(X, np.round(X))


def test_digits_images_are_the_flat_rows_reshaped():
    flat, images = load_digits(seed=3).train, load_digits(seed=3, shape="image").train
    assert images[0].shape == (1438, 8, 8, 1)
    assert np.array_equal(images[0].reshape(-1, 64), flat[0])
    assert np.array_equal(images[1], flat[1])


def test_digits_split_is_reproducible_and_seeded():
    first, again, other = load_digits(seed=5), load_digits(seed=5), load_digits(seed=6)
    assert np.array_equal(first.train[0], again.train[0]) and np.array_equal(first.test[1], again.test[1])
    assert not np.array_equal(first.test[0], other.test[0])


def test_digits_split_is_stratified_and_a_partition():
    split = load_digits(test_fraction=0.25, seed=2)
    everything = np.concatenate([split.train[1], split.test[1]])
    test_share = np.bincount(split.test[1], minlength=10) / np.bincount(everything, minlength=10)
    assert np.all(np.abs(test_share - 0.25) < 0.02)
    # Both splits hold the same 1,797 examples, each once.
    other = load_digits(test_fraction=0.25, seed=9)
    rows, other_rows = (np.concatenate([part.train[0], part.test[0]]) for part in (split, other))
    assert len(rows) == 1797
    assert np.array_equal(np.unique(rows, axis=0), np.unique(other_rows, axis=0))


def test_digits_arrays_are_fresh_copies():
    split = load_digits()
    split.train[0][:] = -1
    assert load_digits().train[0].min() == 0.0


def test_digits_unknown_shape_names_the_choices():
    with pytest.raises(DataError, match="'flat', 'image'.*found 'nchw'"):
        load_digits(shape="nchw")


# ---------------------------------------------------------------- splits


def test_split_sizes_cover_every_example_once():
    x, y = np.arange(50).reshape(25, 2), np.arange(25) % 3
    split = train_test_split(x, y, test_fraction=0.3, seed=4)
    assert len(split.test[0]) == round(25 * 0.3) and len(split.train[0]) == 25 - round(25 * 0.3)
    seen = np.sort(np.concatenate([split.train[0][:, 0], split.test[0][:, 0]]))
    assert np.array_equal(seen, x[:, 0])
    # Rows keep their labels.
    for part_x, part_y in split:
        assert np.array_equal(part_y, y[part_x[:, 0] // 2])


def test_stratified_split_keeps_each_class_share():
    y = np.array([0] * 40 + [1] * 10 + [2] * 50)
    split = train_test_split(np.zeros((100, 1)), y, test_fraction=0.2, seed=0)
    assert np.bincount(split.test[1]).tolist() == [8, 2, 10]


def test_float_targets_are_split_without_stratifying():
    y = np.linspace(0.0, 1.0, 10, dtype=np.float32)
    split = train_test_split(np.zeros((10, 1)), y, test_fraction=0.5, seed=1)
    assert sorted(np.concatenate([split.train[1], split.test[1]]).tolist()) == y.tolist()


@pytest.mark.parametrize(
    ("n", "fraction", "message"),
    [(10, 0.0, "between 0 and 1"), (10, 1.5, "between 0 and 1"), (3, 0.1, "leaves the train or the test set empty")],
)
def test_split_rejects_fractions_that_empty_a_side(n, fraction, message):
    with pytest.raises(DataError, match=message):
        train_test_split(np.zeros((n, 2)), np.zeros(n), test_fraction=fraction)


def test_split_rejects_mismatched_lengths():
    with pytest.raises(DataError, match=r"one label per example, found shapes \(4, 2\) and \(3,\)"):
        train_test_split(np.zeros((4, 2)), np.zeros(3))


# ---------------------------------------------------------------- synthetic sets


def test_xor_without_n_is_the_four_corners():
    X, y = xor()
    assert X.dtype == np.float32 and y.dtype == np.float32 and y.shape == (4, 1)
    assert [(tuple(p), t) for p, t in zip(X.tolist(), y.ravel().tolist())] == [
        ((0.0, 0.0), 0.0),
        ((0.0, 1.0), 1.0),
        ((1.0, 0.0), 1.0),
        ((1.0, 1.0), 0.0),
    ]


def test_noisy_xor_targets_follow_the_nearest_corner():
    X, y = xor(n=200, noise=0.05, seed=7)
    corners = np.round(X)
    assert np.array_equal(y.ravel(), (corners[:, 0] != corners[:, 1]).astype(np.float32))
    assert np.array_equal(xor(n=200, noise=0.05, seed=7)[0], X)


def test_two_spirals_are_balanced_seeded_and_in_range():
    X, y = two_spirals(n=300, noise=0.0, seed=2)
    assert X.shape == (300, 2) and X.dtype == np.float32 and y.dtype == np.int64
    assert np.bincount(y).tolist() == [150, 150]
    assert np.abs(X).max() <= 1.0 + 1e-6
    assert np.array_equal(two_spirals(n=300, noise=0.0, seed=2)[0], X)
    assert not np.array_equal(two_spirals(n=300, noise=0.0, seed=3)[0], X)


def test_two_spirals_are_point_reflections_of_each_other():
    # The second spiral is the first turned by half a turn: reflected through the origin,
    # each class-1 point lies on the class-0 curve r = θ/(3π).
    X, y = two_spirals(n=200, noise=0.0, seed=0)
    reflected = -X[y == 1].astype(np.float64)
    radius = np.hypot(reflected[:, 0], reflected[:, 1])
    angle = radius * 3 * np.pi
    assert np.allclose(np.cos(angle) * radius, reflected[:, 0], atol=1e-5)
    assert np.allclose(np.sin(angle) * radius, reflected[:, 1], atol=1e-5)


def test_noisy_sine_is_sorted_and_noisy_by_the_given_amount():
    x, y = noisy_sine(n=2000, noise=0.2, seed=1)
    assert x.shape == y.shape == (2000, 1) and x.dtype == y.dtype == np.float32
    assert np.all(np.diff(x[:, 0]) >= 0) and x.min() >= -np.pi and x.max() <= np.pi
    assert abs(np.std(y - np.sin(x)) - 0.2) < 0.02


@pytest.mark.parametrize("make", [xor, two_spirals, noisy_sine])
@pytest.mark.parametrize(
    ("args", "message"),
    [({"n": 0}, "positive int"), ({"n": 2.5}, "positive int"), ({"n": 4, "noise": -1}, "at least 0")],
)
def test_synthetic_sets_reject_bad_sizes_and_noise(make, args, message):
    with pytest.raises(DataError, match=f"{make.__name__}: expected .*{message}"):
        make(**args)


# ---------------------------------------------------------------- NumPy files


def test_npz_round_trip_converts_dtypes(tmp_path):
    path = tmp_path / "set.npz"
    np.savez(path, x=np.arange(6, dtype=np.int32).reshape(3, 2), y=np.array([2.0, 0.0, 1.0]))
    X, y = load_npz(path)
    assert X.dtype == np.float32 and X.tolist() == [[0, 1], [2, 3], [4, 5]]
    assert y.dtype == np.int64 and y.tolist() == [2, 0, 1]


@pytest.mark.parametrize(
    ("labels", "dtype"),
    [
        ([0, 1, 1], np.int64),
        ([True, False, True], np.int64),
        ([0.5, 1.0, 2.0], np.float32),
        ([-1, 1, 1], np.float32),
        ([[0], [1], [1]], np.float32),
    ],
)
def test_only_whole_non_negative_1d_labels_become_classes(tmp_path, labels, dtype):
    path = tmp_path / "set.npz"
    np.savez(path, x=np.zeros((3, 2)), y=np.array(labels))
    assert load_npz(path)[1].dtype == dtype


def test_a_1d_x_becomes_one_column(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(4.0))
    np.save(tmp_path / "y.npy", np.arange(4.0) * 0.5)
    X, y = load_npy(tmp_path / "x.npy", tmp_path / "y.npy")
    assert X.shape == (4, 1) and y.shape == (4,) and y.dtype == np.float32


def _npz(tmp_path, **arrays):
    path = tmp_path / "set.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("arrays", "call", "message"),
    [
        ({"a": np.zeros(2)}, {}, r"set.npz, key 'x': no such array \(the archive holds 'a'\)"),
        ({"x": np.zeros((2, 2))}, {}, r"set.npz, key 'y': no such array \(the archive holds 'x'\)"),
        (
            {"x": np.zeros((3, 2)), "y": np.zeros(2)},
            {},
            "set.npz: expected one label per example, found 3 examples and 2 labels",
        ),
        (
            {"x": np.array(["a", "b"]), "y": np.zeros(2)},
            {},
            "set.npz, key 'x': expected numbers, found an array of <U1",
        ),
        ({"x": np.array([[0.0], [np.inf]]), "y": np.zeros(2)}, {}, "set.npz, key 'x', row 1: expected finite numbers"),
        (
            {"x": np.zeros((0, 2)), "y": np.zeros(0)},
            {},
            r"set.npz, key 'x': expected at least one example, found an array of shape \(0, 2\)",
        ),
        (
            {"in": np.zeros((2, 2)), "out": [np.nan, 1]},
            {"x": "in", "y": "out"},
            "set.npz, key 'out', row 0: expected finite",
        ),
    ],
)
def test_npz_errors_name_the_file_and_the_key(tmp_path, arrays, call, message):
    path = _npz(tmp_path, **arrays)
    with pytest.raises(DataError, match=message):
        load_npz(path, **call)


def test_npz_errors_for_missing_and_wrong_kinds_of_file(tmp_path):
    with pytest.raises(DataError, match=r"nothing.npz: no such file \(expected an .npz archive\)"):
        load_npz(tmp_path / "nothing.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(DataError, match=r"one.npy: is a single .npy array, expected an .npz archive \(use load_npy\)"):
        load_npz(tmp_path / "one.npy")
    (tmp_path / "text.npz").write_text("not numpy data\n")
    with pytest.raises(DataError, match="text.npz: cannot be read as an .npz archive"):
        load_npz(tmp_path / "text.npz")
    path = _npz(tmp_path, x=np.array([{}, {}], dtype=object), y=np.zeros(2))
    with pytest.raises(DataError, match="set.npz, key 'x': cannot be read"):
        load_npz(path)


def test_npy_errors_name_the_file(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 2)))
    with pytest.raises(DataError, match=r"y.npy: no such file \(expected a .npy array\)"):
        load_npy(tmp_path / "x.npy", tmp_path / "y.npy")
    path = _npz(tmp_path, y=np.zeros(3))
    with pytest.raises(DataError, match=r"set.npz: is an .npz archive, expected a .npy array \(use load_npz\)"):
        load_npy(tmp_path / "x.npy", path)
    np.save(tmp_path / "y.npy", np.zeros(2))
    with pytest.raises(DataError, match="y.npy: expected one label per example, found 3 examples and 2 labels"):
        load_npy(tmp_path / "x.npy", tmp_path / "y.npy")


# ---------------------------------------------------------------- CSV files


def _csv(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_with_a_header_found_automatically(tmp_path):
    X, y = load_csv(_csv(tmp_path, "a,b,label\n1,2,0\n3,4,1\n\n5,6,1\n"))
    assert X.dtype == np.float32 and X.tolist() == [[1, 2], [3, 4], [5, 6]]
    assert y.dtype == np.int64 and y.tolist() == [0, 1, 1]


@pytest.mark.parametrize(
    ("column", "features", "labels"),
    [(0, [[2, 3], [5, 6]], [1, 4]), (-2, [[1, 3], [4, 6]], [2, 5]), ("b", [[1, 3], [4, 6]], [2, 5])],
)
def test_csv_label_column_by_index_or_name(tmp_path, column, features, labels):
    X, y = load_csv(_csv(tmp_path, '"a", "b" ,c\n1,2,3\n4,5,6\n'), label_column=column)
    assert X.tolist() == features and y.tolist() == labels


def test_csv_without_a_header_and_another_delimiter(tmp_path):
    X, y = load_csv(_csv(tmp_path, "1;2;0.5\n3;4;1.5\n"), header=None, delimiter=";")
    assert X.tolist() == [[1, 2], [3, 4]] and y.dtype == np.float32 and y.tolist() == [0.5, 1.5]


def test_csv_header_true_takes_a_numeric_first_row_as_names(tmp_path):
    X, y = load_csv(_csv(tmp_path, "10,20,30\n1,2,3\n"), header=True, label_column="30")
    assert X.tolist() == [[1, 2]] and y.tolist() == [3]


@pytest.mark.parametrize(
    ("text", "call", "message"),
    [
        ("", {}, "data.csv: the file is empty, expected rows of numbers"),
        ("\n  \n", {}, "data.csv: the file is empty"),
        ("a,b\n", {}, "data.csv: the file has a header but no rows of numbers"),
        ("1,2,3\n4,5,6\n7,8\n", {}, r"data.csv, line 3: expected 3 cells \(as on line 1\), found 2"),
        ("x,y\n\n1,2\n3,4,5\n", {}, r"data.csv, line 4: expected 2 cells \(as on line 1\), found 3"),
        ("1,2\n3,x\n", {}, "data.csv, line 2, column 1: expected a finite number, found 'x'"),
        ("1,2\n3,\n", {}, "data.csv, line 2, column 1: expected a finite number, found ''"),
        ("1,2\n\n3,nan\n", {}, "data.csv, line 3, column 1: expected a finite number, found 'nan'"),
        ("1\n2\n", {}, "data.csv: expected a label column and at least one feature column, found 1 column"),
        (
            "1,2\n3,4\n",
            {"label_column": 2},
            "data.csv: label column 2 does not exist: rows have 2 columns, expected an index from -2 to 1",
        ),
        ("1,2\n3,4\n", {"label_column": -3}, "label column -3 does not exist"),
        ("1,2\n3,4\n", {"label_column": "y"}, r"data.csv: label column 'y' is a name, but the file has no header"),
        ("a,b\n3,4\n", {"label_column": "y"}, r"data.csv, line 1: no column named 'y' in the header \(a, b\)"),
        ("1,2\n3,4\n", {"header": "yes"}, "data.csv: expected header to be True, False, None or 'auto', found 'yes'"),
    ],
)
def test_csv_errors_name_the_file_line_and_column(tmp_path, text, call, message):
    path = _csv(tmp_path, text)
    with pytest.raises(DataError, match=message) as raised:
        load_csv(path, **call)
    assert "\n" not in str(raised.value)


def test_csv_missing_file_and_binary_file(tmp_path):
    with pytest.raises(DataError, match=r"gone.csv: no such file \(expected a CSV file of numbers\)"):
        load_csv(tmp_path / "gone.csv")
    (tmp_path / "blob.csv").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(DataError, match="blob.csv: cannot be read as a CSV text file"):
        load_csv(tmp_path / "blob.csv")


def test_data_error_is_a_value_error_with_its_parts():
    error = DataError("expected 3 cells, found 2", path="p.csv", where="line 4")
    assert isinstance(error, ValueError)
    assert (error.path, error.where, error.problem) == ("p.csv", "line 4", "expected 3 cells, found 2")


def test_a_byte_order_mark_is_not_part_of_the_first_cell(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffkind,length\n1,2.5\n0,3.5\n1,1.5\n".encode())
    X, y = load_csv(path, label_column="kind")
    assert X.shape == (3, 1) and y.tolist() == [1, 0, 1]
    path.write_bytes("\ufeff1,2.5\n0,3.5\n1,1.5\n".encode())
    X, y = load_csv(path, label_column=0)
    assert X.shape == (3, 1)
