"""Job parameters as pydantic models: the API's request schema and the check every submission
passes (through the API or `facecast jobs --offline`), so both refuse the same things."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from facecast.jobs.runner import JobRejected

M = TypeVar("M", bound=BaseModel)


def json_integer(value: Any) -> Any:
    """JSON has one number type: 512.0 is the integer 512 (as JSON Schema says), 512.5 is not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


JsonInt = Annotated[int, BeforeValidator(json_integer)]


class ParamsModel(BaseModel):
    """Unknown keys are errors and JSON types are taken as they are: "5" is not 5, 0 is not false."""

    model_config = ConfigDict(extra="forbid", strict=True)


def parse_params(model: type[M], params: dict[str, Any], kind: str) -> M:
    """`params` validated by `model`, or JobRejected naming each bad key."""
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ())) or "params"
            message = error.get("msg", "invalid")
            if error.get("type") == "extra_forbidden":
                message = "unknown parameter"
            elif error.get("type") == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == r"\S":
                message = "must not be blank"
            problems.append(f"{where}: {message}")
        raise JobRejected(f"{kind}: " + "; ".join(problems)) from None
