from emostream.cli import main

main()
