"""Control signals for the video models, made on the CPU from a performer's video: the body pose
drawn as an OpenPose-style skeleton (`pose.py`), the face crops (`face.py`) and the person mask
(`mask.py`); `build.py` makes all three for a whole video at the model's size."""
