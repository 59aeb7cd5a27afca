"""Characters: the portraits the effects animate or swap in, validated and prepared once each."""

from facecast.characters.library import Character, CharacterError, CharacterLibrary, CharactersConfig

__all__ = ["Character", "CharacterError", "CharacterLibrary", "CharactersConfig"]
