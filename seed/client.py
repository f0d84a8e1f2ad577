# client.py
#
# Reconstruction of the client code from the student lab report
# (Practical Labwork 1, Distributed System, USTH, Nov 2024; Listing 2),
# undoing the PDF-extraction damage ("client socket" -> client_socket,
# "\mathbf{try}" -> try, "_" in print strings -> spaces, the doubled quote
# in "''{base_filename}'" -> a single quote, and the `break` after the
# os.path.isfile() check that the extraction dropped).
#
# Wire behaviour is unchanged: connect, send(basename.encode('utf-8') + b'\n'),
# then send() the file in 1024-byte chunks, then close. No reply is read.
# As in the report, the server IP and then the file name are read from
# standard input with input(), so a test can pipe "127.0.0.1\n<path>\n".
#
# What differs from the report, and nothing else:
#   1. PORT comes from $SEED_PORT (default 8386, as in the report).
#
# Kept on purpose, as in the report: the return value of socket.send() is
# ignored (a short send would silently drop bytes), and errors are printed,
# not reflected in the exit status.
import socket
import os
# Server configuration
SERVER_IP = input("Enter the server's IP address: ")  # Enter Server's IP address
PORT = int(os.environ.get("SEED_PORT", "8386"))  # Server's port


def send_file():
    try:
        # Create a TCP socket
        client_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        print(f"Attempting to connect to {SERVER_IP}:{PORT}...")
        client_socket.connect((SERVER_IP, PORT))
        print(f"Connected to server at {SERVER_IP}:{PORT}")
        # Get the filename and ensure it exists
        while True:
            filename = input("Enter the full file name (with extension): ")
            if os.path.isfile(filename):  # Ensure the file exists
                break
            print("File not found. Please try again.")
        # Extract just the file name for sending (without the directory path)
        base_filename = os.path.basename(filename)
        # Send the filename to the server
        client_socket.send(base_filename.encode('utf-8') + b'\n')
        # Send filename with newline delimiter
        # Open the file and send its content in chunks
        with open(filename, 'rb') as file:
            print(f"Sending file '{base_filename}' to the server...")
            while chunk := file.read(1024):  # Read in chunks of 1KB
                client_socket.send(chunk)
        print(f"File '{base_filename}' sent successfully to the server.")
        client_socket.close()
    except ConnectionRefusedError:
        print("Connection failed: Ensure the server is running and reachable.")
    except socket.timeout:
        print("Connection timed out: Server is taking too long to respond.")
    except Exception as e:
        print(f"An unexpected error occurred: {e}")


if __name__ == "__main__":
    send_file()
